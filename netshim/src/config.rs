//! A kata-style TOML configuration file (`netshim attach --config FILE`).
//!
//! kata's own keys are read from `[runtime]` — `internetworking_model` and
//! `disable_new_netns` — so a kata `configuration.toml` works as it is (its other sections
//! and keys are not netshim's and are ignored). netshim's own keys live in `[netshim]`,
//! where an unknown key is an error (a typo must not be silently ignored):
//!
//! ```toml
//! [runtime]
//! internetworking_model = "tcfilter"   # default | tcfilter | macvtap | none
//! disable_new_netns = false
//!
//! [netshim]
//! tc_backend = "ebpf"                  # ebpf | mirred
//! queues = 1
//! tap_owner = "1000:1000"              # UID[:GID]
//! txqueuelen = 1000
//! vhost_user_dir = "/tmp"
//! guard = "enforce"                    # enforce | log | off (the source guard, eBPF only)
//! guard_allow_dhcp = false
//! guard_allowed_addresses = ["10.0.0.5/32", "fd00::/64"]
//! guard_allowed_ethertypes = ["0x88b5"]
//! rx_rate = "1G"                       # rate limits (bits/s; 0 = none), over kata's keys
//! tx_rate = 100000000
//! rx_burst = "256k"                    # bytes; default: the profile's
//! limit_profile = "netshim"            # netshim | kata (the HTB classes' parameters)
//!
//! [hypervisor.qemu]                    # kata's limiter keys, in any [hypervisor.*]
//! rx_rate_limiter_max_rate = 1000000000
//! tx_rate_limiter_max_rate = 1000000000
//! ```
//! Command-line flags override the file.

use std::{
    io::Read,
    os::unix::fs::OpenOptionsExt,
    path::{Path, PathBuf},
};

use crate::{datapath::TcBackend, limit::rate, model::InternetworkingModel};

/// Largest configuration file accepted.
pub const MAX_CONFIG_BYTES: u64 = 1 << 20;

/// What a configuration file sets; `None` = not set.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FileConfig {
    pub model: Option<InternetworkingModel>,
    pub disable_new_netns: Option<bool>,
    pub tc_backend: Option<TcBackend>,
    pub queues: Option<u32>,
    pub tap_owner: Option<TapOwner>,
    pub txqueuelen: Option<u32>,
    pub vhost_user_dir: Option<PathBuf>,
    /// `guard`: the source guard's mode.
    pub guard: Option<GuardMode>,
    pub guard_allow_dhcp: Option<bool>,
    pub guard_allowed_addresses: Option<Vec<ipnet::IpNet>>,
    pub guard_allowed_ethertypes: Option<Vec<u16>>,
    /// Rate limits: kata's `[hypervisor.*]` keys, then `[netshim]`'s over them.
    pub limits: crate::limit::LimitRequest,
}

/// A tap's owner: `UID[:GID]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TapOwner {
    pub uid: u32,
    pub gid: Option<u32>,
}

/// The largest uid or gid a tap can be given: `(uid_t)-1` (4294967295) is what
/// TUNSETOWNER / TUNSETGROUP take as "no owner", and the kernel refuses it.
pub const MAX_TAP_ID: u32 = u32::MAX - 1;

/// Which id of a tap's owner [`parse_tap_id`] reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TapId {
    Uid,
    Gid,
}

/// Reads a tap's uid or gid from its decimal text: 0..=[`MAX_TAP_ID`]. The error says why
/// (not a number, out of range, or `(uid_t)-1`) without naming the key.
pub fn parse_tap_id(text: &str, id: TapId) -> Result<u32, String> {
    let digits = text.strip_prefix(['-', '+']).unwrap_or(text);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!("{text:?} is not a number"));
    }
    let out_of_range = || format!("{text} is out of range (0..={MAX_TAP_ID})");
    let negative = text.starts_with('-') && digits.bytes().any(|b| b != b'0');
    match digits.parse::<u32>() {
        Ok(_) if negative => Err(out_of_range()),
        Ok(u32::MAX) => {
            let (c_type, what) = match id {
                TapId::Uid => ("uid_t", "owner"),
                TapId::Gid => ("gid_t", "group"),
            };
            Err(format!(
                "{text} is ({c_type})-1, which the kernel takes as \"no {what}\" and refuses \
                 for a tap; give an id from 0 to {MAX_TAP_ID}, or none"
            ))
        }
        Ok(n) => Ok(n),
        Err(_) => Err(out_of_range()),
    }
}

impl std::str::FromStr for TapOwner {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let id = |part: &str, id: TapId| {
            parse_tap_id(part, id).map_err(|e| {
                let what = if id == TapId::Uid { "uid" } else { "gid" };
                format!("tap owner {s:?}: {what} {e}")
            })
        };
        match s.split_once(':') {
            Some((uid, gid)) => Ok(TapOwner {
                uid: id(uid, TapId::Uid)?,
                gid: Some(id(gid, TapId::Gid)?),
            }),
            None => Ok(TapOwner {
                uid: id(s, TapId::Uid)?,
                gid: None,
            }),
        }
    }
}

use crate::guard::{
    settings::{check_ethertype, parse_cidr, parse_ethertype, GuardSettingsError},
    GuardMode,
};

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("reading config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config file {path} is {kind}, not a regular file")]
    NotRegular { path: PathBuf, kind: &'static str },
    #[error("config file {path} is larger than {MAX_CONFIG_BYTES} bytes")]
    TooLarge { path: PathBuf },
    #[error("config file {path}: {message}")]
    Syntax { path: PathBuf, message: String },
    #[error("config file {path}: {key}: {message}")]
    Value {
        path: PathBuf,
        key: String,
        message: String,
    },
}

/// Reads and parses a configuration file (at most [`MAX_CONFIG_BYTES`]).
pub fn load(path: &Path) -> Result<FileConfig, ConfigError> {
    let read_err = |source| ConfigError::Read {
        path: path.to_owned(),
        source,
    };
    // Non-blocking, so that a FIFO (or a device) cannot hold the open; anything but a
    // regular file is refused before a byte is read.
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(path)
        .map_err(read_err)?;
    let file_type = file.metadata().map_err(read_err)?.file_type();
    if !file_type.is_file() {
        return Err(ConfigError::NotRegular {
            path: path.to_owned(),
            kind: file_kind(&file_type),
        });
    }
    let mut text = String::new();
    file.take(MAX_CONFIG_BYTES + 1)
        .read_to_string(&mut text)
        .map_err(read_err)?;
    if text.len() as u64 > MAX_CONFIG_BYTES {
        return Err(ConfigError::TooLarge {
            path: path.to_owned(),
        });
    }
    parse(&text, path)
}

/// A non-regular file type, as a word.
fn file_kind(t: &std::fs::FileType) -> &'static str {
    use std::os::unix::fs::FileTypeExt;
    if t.is_dir() {
        "a directory"
    } else if t.is_fifo() {
        "a FIFO"
    } else if t.is_socket() {
        "a socket"
    } else if t.is_char_device() || t.is_block_device() {
        "a device"
    } else {
        "a special file"
    }
}

/// Parses configuration text; `path` only names the file in errors.
pub fn parse(text: &str, path: &Path) -> Result<FileConfig, ConfigError> {
    let doc: toml::Table = text
        .parse()
        .map_err(|e: toml::de::Error| ConfigError::Syntax {
            path: path.to_owned(),
            message: e.message().to_owned(),
        })?;
    let value_err = |key: &str, message: String| ConfigError::Value {
        path: path.to_owned(),
        key: key.to_owned(),
        message,
    };
    let mut config = FileConfig::default();
    if let Some(runtime) = section(&doc, "runtime", path)? {
        if let Some(v) = runtime.get("internetworking_model") {
            let key = "runtime.internetworking_model";
            let name = v
                .as_str()
                .ok_or_else(|| value_err(key, "not a string".into()))?;
            config.model = Some(
                name.parse()
                    .map_err(|e: crate::model::UnknownModel| value_err(key, e.to_string()))?,
            );
        }
        if let Some(v) = runtime.get("disable_new_netns") {
            let key = "runtime.disable_new_netns";
            config.disable_new_netns = Some(
                v.as_bool()
                    .ok_or_else(|| value_err(key, "not a boolean".into()))?,
            );
        }
    }
    config.limits = hypervisor_limits(&doc, path)?;
    if let Some(own) = section(&doc, "netshim", path)? {
        for (key, v) in own {
            let full = format!("netshim.{key}");
            let string = || {
                v.as_str()
                    .ok_or_else(|| value_err(&full, "not a string".into()))
            };
            let number = || {
                v.as_integer()
                    .and_then(|n| u32::try_from(n).ok())
                    .ok_or_else(|| value_err(&full, "not a number from 0 to 4294967295".into()))
            };
            match key.as_str() {
                "tc_backend" => {
                    config.tc_backend = Some(string()?.parse().map_err(
                        |e: crate::datapath::UnknownBackend| value_err(&full, e.to_string()),
                    )?)
                }
                "queues" => {
                    let n = number()?;
                    if !(1..=256).contains(&n) {
                        return Err(value_err(&full, format!("{n} is not in 1..=256")));
                    }
                    config.queues = Some(n);
                }
                "tap_owner" => {
                    let owner = match v.as_integer() {
                        Some(n) => TapOwner {
                            uid: parse_tap_id(&n.to_string(), TapId::Uid)
                                .map_err(|e| value_err(&full, format!("uid {e}")))?,
                            gid: None,
                        },
                        None => string()?.parse().map_err(|e| value_err(&full, e))?,
                    };
                    config.tap_owner = Some(owner);
                }
                "txqueuelen" => config.txqueuelen = Some(number()?),
                "vhost_user_dir" => config.vhost_user_dir = Some(PathBuf::from(string()?)),
                "guard" => config.guard = Some(string()?.parse().map_err(|e| value_err(&full, e))?),
                "guard_allow_dhcp" => {
                    config.guard_allow_dhcp = Some(
                        v.as_bool()
                            .ok_or_else(|| value_err(&full, "not a boolean".into()))?,
                    )
                }
                "guard_allowed_addresses" => {
                    let list = array(v).map_err(|m| value_err(&full, m))?;
                    let mut nets = Vec::new();
                    for item in list {
                        let text = item.as_str().ok_or_else(|| {
                            value_err(&full, "not a list of strings (CIDRs)".into())
                        })?;
                        nets.push(parse_cidr(text).map_err(|e| value_err(&full, e.to_string()))?);
                    }
                    config.guard_allowed_addresses = Some(nets);
                }
                "guard_allowed_ethertypes" => {
                    let list = array(v).map_err(|m| value_err(&full, m))?;
                    let mut types = Vec::new();
                    for item in list {
                        let t = match (item.as_str(), item.as_integer()) {
                            (Some(text), _) => parse_ethertype(text),
                            (_, Some(n)) => u16::try_from(n)
                                .map_err(|_| GuardSettingsError::BadEthertype(n.to_string()))
                                .and_then(check_ethertype),
                            _ => Err(GuardSettingsError::BadEthertype(format!("{item:?}"))),
                        };
                        types.push(t.map_err(|e| value_err(&full, e.to_string()))?);
                    }
                    config.guard_allowed_ethertypes = Some(types);
                }
                "rx_rate" | "tx_rate" => {
                    let bps = limit_value(v, rate::parse_rate, rate::rate_from_integer)
                        .map_err(|e| value_err(&full, e))?;
                    match key.as_str() {
                        "rx_rate" => config.limits.rx_rate = Some(bps),
                        _ => config.limits.tx_rate = Some(bps),
                    }
                }
                "rx_burst" | "tx_burst" => {
                    let bytes = limit_value(v, rate::parse_burst, rate::burst_from_integer)
                        .map_err(|e| value_err(&full, e))?;
                    match key.as_str() {
                        "rx_burst" => config.limits.rx_burst = Some(bytes),
                        _ => config.limits.tx_burst = Some(bytes),
                    }
                }
                "limit_profile" => {
                    config.limits.profile =
                        Some(string()?.parse().map_err(|e| value_err(&full, e))?)
                }
                other => {
                    return Err(value_err(
                        &format!("netshim.{other}"),
                        "unknown key (known: tc_backend, queues, tap_owner, txqueuelen, \
                         vhost_user_dir, guard, guard_allow_dhcp, guard_allowed_addresses, \
                         guard_allowed_ethertypes, rx_rate, tx_rate, rx_burst, tx_burst, \
                         limit_profile)"
                            .into(),
                    ))
                }
            }
        }
    }
    Ok(config)
}

/// A rate or burst as TOML holds it: an integer, or a string with units.
fn limit_value(
    v: &toml::Value,
    text: fn(&str) -> Result<u64, rate::RateError>,
    integer: fn(i64) -> Result<u64, rate::RateError>,
) -> Result<u64, String> {
    match (v.as_integer(), v.as_str()) {
        (Some(n), _) => integer(n).map_err(|e| e.to_string()),
        (_, Some(t)) => text(t).map_err(|e| e.to_string()),
        _ => Err("not a number or a string".into()),
    }
}

/// kata's `rx_rate_limiter_max_rate` / `tx_rate_limiter_max_rate` from the `[hypervisor.*]`
/// sections (kata reads them from the section of the hypervisor it runs; a file whose
/// sections disagree is refused, since which one the runtime uses is not netshim's to
/// guess). Integers, bits per second, 0 = unlimited, as kata takes them.
fn hypervisor_limits(
    doc: &toml::Table,
    path: &Path,
) -> Result<crate::limit::LimitRequest, ConfigError> {
    use crate::limit::request::keys;
    let mut out = crate::limit::LimitRequest::default();
    let Some(hypervisors) = section(doc, "hypervisor", path)? else {
        return Ok(out);
    };
    let mut seen: [Option<(String, u64)>; 2] = [None, None];
    for (name, table) in hypervisors {
        let Some(table) = table.as_table() else {
            continue;
        };
        for (i, key) in [keys::KATA_RX, keys::KATA_TX].into_iter().enumerate() {
            let Some(v) = table.get(key) else { continue };
            let full = format!("hypervisor.{name}.{key}");
            let err = |message: String| ConfigError::Value {
                path: path.to_owned(),
                key: full.clone(),
                message,
            };
            let n = v
                .as_integer()
                .ok_or_else(|| err("not an integer (bits per second, 0 = unlimited)".into()))?;
            let bps = rate::rate_from_integer(n).map_err(|e| err(e.to_string()))?;
            match &seen[i] {
                Some((other, b)) if *b != bps => {
                    return Err(err(format!(
                        "{bps} differs from {other} = {b}: keep the limit in one hypervisor \
                         section (or set netshim.{}_rate)",
                        if i == 0 { "rx" } else { "tx" }
                    )))
                }
                _ => seen[i] = Some((full.clone(), bps)),
            }
        }
    }
    out.rx_rate = seen[0].as_ref().map(|(_, b)| *b);
    out.tx_rate = seen[1].as_ref().map(|(_, b)| *b);
    Ok(out)
}

fn array(v: &toml::Value) -> Result<&Vec<toml::Value>, String> {
    v.as_array().ok_or_else(|| "not a list".to_owned())
}

fn section<'a>(
    doc: &'a toml::Table,
    name: &str,
    path: &Path,
) -> Result<Option<&'a toml::Table>, ConfigError> {
    match doc.get(name) {
        None => Ok(None),
        Some(toml::Value::Table(t)) => Ok(Some(t)),
        Some(_) => Err(ConfigError::Value {
            path: path.to_owned(),
            key: name.to_owned(),
            message: "not a table".into(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(text: &str) -> Result<FileConfig, ConfigError> {
        parse(text, Path::new("test.toml"))
    }

    #[test]
    fn kata_limiter_keys_from_any_hypervisor_section_and_netshim_over_them() {
        let c = p(r#"
            [hypervisor.firecracker]
            rx_rate_limiter_max_rate = 100000000
            tx_rate_limiter_max_rate = 0
        "#)
        .unwrap();
        assert_eq!(c.limits.rx_rate, Some(100_000_000));
        assert_eq!(c.limits.tx_rate, Some(0), "0 = unlimited, as kata");
        let c = p(r#"
            [hypervisor.qemu]
            rx_rate_limiter_max_rate = 100000000
            [netshim]
            rx_rate = "1G"
            tx_rate = 5000000
            tx_burst = "64k"
            limit_profile = "kata"
        "#)
        .unwrap();
        assert_eq!(c.limits.rx_rate, Some(1_000_000_000), "[netshim] wins");
        assert_eq!(c.limits.tx_burst, Some(65536));
        assert_eq!(c.limits.profile, Some(crate::limit::HtbProfile::Kata));
        for (text, key) in [
            ("[hypervisor.qemu]\nrx_rate_limiter_max_rate = -1", "hypervisor.qemu.rx_rate_limiter_max_rate"),
            ("[hypervisor.qemu]\nrx_rate_limiter_max_rate = 5", "hypervisor.qemu.rx_rate_limiter_max_rate"),
            ("[hypervisor.clh]\ntx_rate_limiter_max_rate = \"1G\"", "hypervisor.clh.tx_rate_limiter_max_rate"),
            ("[hypervisor.a]\nrx_rate_limiter_max_rate = 100000000\n[hypervisor.b]\nrx_rate_limiter_max_rate = 200000000", "rx_rate_limiter_max_rate"),
            ("[netshim]\nrx_burst = 1", "netshim.rx_burst"),
            ("[netshim]\nlimit_profile = \"fq\"", "netshim.limit_profile"),
        ] {
            let e = p(text).unwrap_err().to_string();
            assert!(e.contains(key), "{text}: {e}");
        }
    }

    #[test]
    fn kata_keys_and_own_keys() {
        let c = p(r#"
            [hypervisor.qemu]
            path = "/usr/bin/qemu-system-x86_64"
            [runtime]
            internetworking_model = "default"
            disable_new_netns = false
            enable_debug = true
            [netshim]
            tc_backend = "mirred"
            queues = 4
            tap_owner = "1000:100"
            txqueuelen = 500
            vhost_user_dir = "/run/vhost"
        "#)
        .unwrap();
        assert_eq!(c.model, Some(InternetworkingModel::TcFilter));
        assert_eq!(c.disable_new_netns, Some(false));
        assert_eq!(c.tc_backend, Some(TcBackend::Mirred));
        assert_eq!(c.queues, Some(4));
        assert_eq!(
            c.tap_owner,
            Some(TapOwner {
                uid: 1000,
                gid: Some(100)
            })
        );
        assert_eq!(c.txqueuelen, Some(500));
        assert_eq!(c.vhost_user_dir, Some(PathBuf::from("/run/vhost")));
    }

    #[test]
    fn guard_keys() {
        let c = p(r#"
            [netshim]
            guard = "log"
            guard_allow_dhcp = true
            guard_allowed_addresses = ["10.0.0.5/32", "fd00::/64", "10.0.0.6"]
            guard_allowed_ethertypes = ["0x88b5", 35000]
        "#)
        .unwrap();
        assert_eq!(c.guard, Some(GuardMode::Log));
        assert_eq!(c.guard_allow_dhcp, Some(true));
        let nets = c.guard_allowed_addresses.unwrap();
        assert_eq!(nets[2], "10.0.0.6/32".parse().unwrap());
        assert_eq!(c.guard_allowed_ethertypes, Some(vec![0x88b5, 35000]));
        for (text, needle) in [
            ("guard = \"on\"", "unknown guard mode"),
            ("guard_allowed_ethertypes = [\"0x0800\"]", "always checked"),
            ("guard_allowed_ethertypes = [1500]", "802.3 lengths"),
            ("guard_allowed_addresses = [\"10.0.0.0/40\"]", "not a CIDR"),
            ("guard_allowed_addresses = \"10.0.0.1\"", "not a list"),
            ("guard_allow_dhcp = \"yes\"", "not a boolean"),
        ] {
            let e = p(&format!("[netshim]\n{text}\n")).unwrap_err().to_string();
            assert!(e.contains(needle), "{text}: {e}");
        }
    }

    #[test]
    fn empty_file_sets_nothing() {
        assert_eq!(p("").unwrap(), FileConfig::default());
    }

    #[test]
    fn unknown_model_uses_katas_text_and_names_the_key() {
        let e = p("[runtime]\ninternetworking_model = \"bridged\"\n").unwrap_err();
        let s = e.to_string();
        assert!(s.contains("runtime.internetworking_model"), "{s}");
        assert!(s.contains("Unknown type bridged"), "{s}");
    }

    #[test]
    fn bad_values_and_unknown_own_keys_are_errors() {
        for bad in [
            "[netshim]\nqueues = 0\n",
            "[netshim]\nqueues = -1\n",
            "[netshim]\nqueues = \"2\"\n",
            "[netshim]\ntc_backend = \"xdp\"\n",
            "[netshim]\ntap_owner = \"root\"\n",
            "[netshim]\ntap_ownr = 1\n",
            "[runtime]\ndisable_new_netns = \"yes\"\n",
            "runtime = 3\n",
            "[runtime\n",
        ] {
            assert!(p(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn tap_owner_forms() {
        assert_eq!("7".parse::<TapOwner>(), Ok(TapOwner { uid: 7, gid: None }));
        assert_eq!(
            "7:8".parse::<TapOwner>(),
            Ok(TapOwner {
                uid: 7,
                gid: Some(8)
            })
        );
        assert!("7:".parse::<TapOwner>().is_err());
        assert!(":8".parse::<TapOwner>().is_err());
        let c = p("[netshim]\ntap_owner = 42\n").unwrap();
        assert_eq!(c.tap_owner, Some(TapOwner { uid: 42, gid: None }));
        assert_eq!(
            "4294967294:0".parse::<TapOwner>(),
            Ok(TapOwner {
                uid: MAX_TAP_ID,
                gid: Some(0)
            })
        );
    }

    #[test]
    fn tap_ids_are_refused_with_the_reason() {
        let err = |s: &str| s.parse::<TapOwner>().unwrap_err();
        // (uid_t)-1 is "no owner" to the kernel: TUNSETOWNER fails with EINVAL.
        for (owner, text) in [
            (
                "4294967295",
                "uid 4294967295 is (uid_t)-1, which the kernel takes as \"no owner\"",
            ),
            (
                "1000:4294967295",
                "gid 4294967295 is (gid_t)-1, which the kernel takes as \"no group\"",
            ),
        ] {
            let e = err(owner);
            assert!(e.contains(text), "{e}");
        }
        for (owner, text) in [
            (
                "99999999999",
                "uid 99999999999 is out of range (0..=4294967294)",
            ),
            (
                "4294967296",
                "uid 4294967296 is out of range (0..=4294967294)",
            ),
            ("-1", "uid -1 is out of range (0..=4294967294)"),
            (
                "7:123456789012345678901234567890",
                "gid 123456789012345678901234567890 is out",
            ),
            ("qemu", "uid \"qemu\" is not a number"),
            ("7:x", "gid \"x\" is not a number"),
            ("", "uid \"\" is not a number"),
            ("1 000", "is not a number"),
        ] {
            let e = err(owner);
            assert!(e.contains(text), "{owner:?}: {e}");
        }
        assert_eq!(parse_tap_id("0", TapId::Uid), Ok(0));
        assert_eq!(parse_tap_id("-0", TapId::Gid), Ok(0));
        for (text, want) in [
            ("tap_owner = 4294967295", "uid 4294967295 is (uid_t)-1"),
            ("tap_owner = -5", "uid -5 is out of range"),
            ("tap_owner = 99999999999", "uid 99999999999 is out of range"),
            (
                "tap_owner = \"5:99999999999\"",
                "gid 99999999999 is out of range",
            ),
        ] {
            let e = p(&format!("[netshim]\n{text}\n")).unwrap_err().to_string();
            assert!(
                e.contains("netshim.tap_owner") && e.contains(want),
                "{text}: {e}"
            );
        }
    }

    #[test]
    fn fifos_and_directories_are_refused_without_reading() {
        let dir = std::env::temp_dir().join(format!("netshim-config-fifo-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let fifo = dir.join("config.toml");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        // No writer: a blocking open would never return.
        let err = load(&fifo).unwrap_err();
        assert!(
            err.to_string().contains("is a FIFO, not a regular file"),
            "{err}"
        );
        let err = load(&dir).unwrap_err();
        assert!(err.to_string().contains("is a directory"), "{err}");
        std::fs::remove_file(&fifo).unwrap();
        std::fs::remove_dir(&dir).unwrap();
    }

    #[test]
    fn oversized_files_are_refused() {
        let dir = std::env::temp_dir().join(format!("netshim-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("big.toml");
        std::fs::write(&path, "#".repeat(MAX_CONFIG_BYTES as usize + 10)).unwrap();
        let e = load(&path).unwrap_err();
        assert!(matches!(e, ConfigError::TooLarge { .. }), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
        assert!(matches!(
            load(Path::new("/nonexistent/netshim.toml")),
            Err(ConfigError::Read { .. })
        ));
    }
}
