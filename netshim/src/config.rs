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
//! ```
//! Command-line flags override the file.

use std::{
    io::Read,
    os::unix::fs::OpenOptionsExt,
    path::{Path, PathBuf},
};

use crate::{backend::TcBackend, model::InternetworkingModel};

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
}

/// A tap's owner: `UID[:GID]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TapOwner {
    pub uid: u32,
    pub gid: Option<u32>,
}

impl std::str::FromStr for TapOwner {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let num = |part: &str, what: &str| {
            part.parse::<u32>()
                .map_err(|_| format!("tap owner {s:?}: {what} {part:?} is not a number"))
        };
        match s.split_once(':') {
            Some((uid, gid)) => Ok(TapOwner {
                uid: num(uid, "uid")?,
                gid: Some(num(gid, "gid")?),
            }),
            None => Ok(TapOwner {
                uid: num(s, "uid")?,
                gid: None,
            }),
        }
    }
}

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
                        |e: crate::backend::UnknownBackend| value_err(&full, e.to_string()),
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
                        Some(_) => TapOwner {
                            uid: number()?,
                            gid: None,
                        },
                        None => string()?.parse().map_err(|e| value_err(&full, e))?,
                    };
                    config.tap_owner = Some(owner);
                }
                "txqueuelen" => config.txqueuelen = Some(number()?),
                "vhost_user_dir" => config.vhost_user_dir = Some(PathBuf::from(string()?)),
                other => {
                    return Err(value_err(
                        &format!("netshim.{other}"),
                        "unknown key (known: tc_backend, queues, tap_owner, txqueuelen, \
                         vhost_user_dir)"
                            .into(),
                    ))
                }
            }
        }
    }
    Ok(config)
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
