//! The network configuration on stdin: the spec's keys, netshim's own keys, and the
//! `prevResult` of a chained call.
//!
//! ```json
//! {"cniVersion": "0.4.0", "name": "pods", "type": "netshim",
//!  "model": "tcfilter", "tc_backend": "ebpf", "fast_path": "auto",
//!  "queues": 1, "tap_uid": 1000, "tap_gid": 1000, "txqueuelen": 1000,
//!  "tap_name": "vmtap0", "guard": "enforce", "guard_allow_dhcp": false,
//!  "allowed_addresses": ["10.0.0.5/32"], "guard_allowed_ethertypes": ["0x88b5"],
//!  "prevResult": {...}}
//! ```
//! Rate limits come from `runtimeConfig`, `args` and netshim's own keys (see
//! [`super::limits`]); other keys of other plugins and of the runtime are ignored.
//! `tap_name` (tc-redirect-tap's key) names CNI_IFNAME's tap instead of `tap<N>_kata`.

use serde::Deserialize;
use serde_json::Value;

use super::{
    convert,
    error::{CniError, DECODING_FAILURE, INVALID_CONFIG},
    result::CniResult,
    version,
};
use crate::{
    config::TapId, datapath::TcBackend, guard::GuardSettings, model::InternetworkingModel,
    sandbox::AttachOptions,
};

/// Largest configuration accepted on stdin.
pub const MAX_CONFIG_BYTES: usize = 1 << 20;

/// A decoded, validated network configuration.
#[derive(Debug, Clone)]
pub struct NetConf {
    pub cni_version: String,
    pub name: String,
    pub plugin_type: String,
    pub attach: AttachOptions,
    /// The name of CNI_IFNAME's tap (`tap_name`), validated; `tap<N>_kata` when `None`.
    pub tap_name: Option<String>,
    /// `report_tap` (default true): ADD's result lists the tap and the VM's pseudo-interface
    /// (tc-redirect-tap's shape, what firecracker-containerd reads). false: the result is
    /// `prevResult` as it came, for runtimes that take every interface with a `sandbox` for
    /// a container interface (podman, see [`super::commands::tap_name_of`]).
    pub report_tap: bool,
    pub prev_result: Option<CniResult>,
}

/// The keys netshim reads; everything else is ignored.
#[derive(Deserialize)]
struct RawConf {
    #[serde(rename = "cniVersion")]
    cni_version: String,
    name: String,
    #[serde(rename = "type")]
    plugin_type: String,
    model: Option<String>,
    tc_backend: Option<String>,
    fast_path: Option<String>,
    queues: Option<u32>,
    tap_uid: Option<Value>,
    tap_gid: Option<Value>,
    txqueuelen: Option<u32>,
    tap_name: Option<String>,
    report_tap: Option<bool>,
    guard: Option<String>,
    guard_allow_dhcp: Option<bool>,
    /// Neutron's allowed-address-pairs: sources the guest may use besides its addresses.
    allowed_addresses: Option<Vec<String>>,
    guard_allowed_ethertypes: Option<Vec<Value>>,
    #[serde(rename = "prevResult")]
    prev_result: Option<Value>,
}

fn invalid(msg: String) -> CniError {
    CniError::new(INVALID_CONFIG, msg)
}

/// The `cniVersion` of whatever JSON object `bytes` holds, for error results written
/// before (or without) a valid configuration.
pub fn peek_version(bytes: &[u8]) -> Option<String> {
    #[derive(Deserialize)]
    struct Peek {
        #[serde(rename = "cniVersion")]
        cni_version: String,
    }
    serde_json::from_slice::<Peek>(bytes)
        .ok()
        .map(|p| p.cni_version)
        .filter(|v| version::check(v).is_ok())
}

/// Decodes and validates a configuration: not JSON or too large = 6, an unsupported
/// `cniVersion` = 1, a missing key or a value netshim cannot use (a `tap_name` that is no
/// interface name, or with the macvtap model) = 7.
pub fn parse(bytes: &[u8]) -> Result<NetConf, CniError> {
    if bytes.len() > MAX_CONFIG_BYTES {
        return Err(CniError::new(
            DECODING_FAILURE,
            format!("network configuration is larger than {MAX_CONFIG_BYTES} bytes"),
        ));
    }
    let value: Value = serde_json::from_slice(bytes).map_err(|e| {
        CniError::new(DECODING_FAILURE, "network configuration is not JSON")
            .with_details(e.to_string())
    })?;
    if !value.is_object() {
        return Err(CniError::new(
            DECODING_FAILURE,
            "network configuration is not a JSON object",
        ));
    }
    if let Some(v) = value.get("cniVersion").and_then(Value::as_str) {
        version::check(v)?;
    }
    let limits = super::limits::from_conf(&value).map_err(invalid)?;
    let raw: RawConf = serde_json::from_value(value).map_err(|e| {
        CniError::new(INVALID_CONFIG, "invalid network configuration").with_details(e.to_string())
    })?;
    let mut attach = attach_options(&raw)?;
    attach.limits = limits;
    attach
        .limits
        .limits()
        .map_err(|e| invalid(format!("rate limit: {e}")))?;
    if let Some(name) = &raw.tap_name {
        crate::tap::name::validate_custom(name).map_err(|e| invalid(format!("tap_name: {e}")))?;
        if attach.model == InternetworkingModel::MacVtap {
            return Err(invalid(
                "tap_name names a tap of the tcfilter or none model; the macvtap model makes \
                 macvtaps named tap<N>_kata"
                    .into(),
            ));
        }
    }
    let prev_result = raw
        .prev_result
        .map(|v| convert::prev_result(v, &raw.cni_version))
        .transpose()?;
    Ok(NetConf {
        cni_version: raw.cni_version,
        name: raw.name,
        plugin_type: raw.plugin_type,
        attach,
        tap_name: raw.tap_name,
        report_tap: raw.report_tap.unwrap_or(true),
        prev_result,
    })
}

/// netshim's keys as attach options, refused as the CLI refuses the same flags.
fn attach_options(raw: &RawConf) -> Result<AttachOptions, CniError> {
    let model: InternetworkingModel = match &raw.model {
        Some(m) => m.parse().map_err(|e| invalid(format!("model: {e}")))?,
        None => InternetworkingModel::default(),
    };
    if model != InternetworkingModel::TcFilter
        && (raw.tc_backend.is_some() || raw.fast_path.is_some())
    {
        return Err(invalid(format!(
            "tc_backend and fast_path apply to the tcfilter model only, not to '{model}'"
        )));
    }
    let backend: TcBackend = match &raw.tc_backend {
        Some(b) => b.parse().map_err(|e| invalid(format!("tc_backend: {e}")))?,
        None => TcBackend::default(),
    };
    let fast_path = match &raw.fast_path {
        Some(f) => f.parse().map_err(|e| invalid(format!("fast_path: {e}")))?,
        None => Default::default(),
    };
    let queues = raw.queues.unwrap_or(1);
    if !(1..=256).contains(&queues) {
        return Err(invalid(format!("queues {queues} is not in 1..=256")));
    }
    if let Some(len) = raw.txqueuelen {
        if !(1..=100_000).contains(&len) {
            return Err(invalid(format!("txqueuelen {len} is not in 1..=100000")));
        }
    }
    let tap_id = |key: &str, id, v: &Option<Value>| {
        v.as_ref()
            .map(|v| match v {
                Value::Number(n) => crate::config::parse_tap_id(&n.to_string(), id)
                    .map_err(|e| invalid(format!("{key} {e}"))),
                other => Err(invalid(format!("{key} {other} is not a number"))),
            })
            .transpose()
    };
    let options = AttachOptions {
        model,
        backend,
        queues,
        tap_owner: tap_id("tap_uid", TapId::Uid, &raw.tap_uid)?,
        tap_group: tap_id("tap_gid", TapId::Gid, &raw.tap_gid)?,
        txqueuelen: raw.txqueuelen,
        fast_path,
        guard: guard_settings(raw)?,
        guard_explicit: raw.guard.is_some(),
        ..AttachOptions::default()
    };
    options
        .resolved_guard()
        .map_err(|e| invalid(e.to_string()))
        .map(drop)?;
    Ok(options)
}

/// The guard keys: `guard`, `guard_allow_dhcp`, `allowed_addresses`,
/// `guard_allowed_ethertypes` (strings, hex with 0x, or numbers).
fn guard_settings(raw: &RawConf) -> Result<GuardSettings, CniError> {
    use crate::guard::settings::{check_ethertype, parse_cidr, parse_ethertype};
    let mode = match &raw.guard {
        Some(m) => m.parse().map_err(|e| invalid(format!("guard: {e}")))?,
        None => Default::default(),
    };
    let allowed_addresses = raw
        .allowed_addresses
        .iter()
        .flatten()
        .map(|s| parse_cidr(s).map_err(|e| invalid(format!("allowed_addresses: {e}"))))
        .collect::<Result<_, _>>()?;
    let allowed_ethertypes = raw
        .guard_allowed_ethertypes
        .iter()
        .flatten()
        .map(|v| {
            let t = match v {
                Value::String(s) => parse_ethertype(s),
                Value::Number(n) => match n.as_u64().and_then(|n| u16::try_from(n).ok()) {
                    Some(t) => check_ethertype(t),
                    None => parse_ethertype(&n.to_string()),
                },
                other => parse_ethertype(&other.to_string()),
            };
            t.map_err(|e| invalid(format!("guard_allowed_ethertypes: {e}")))
        })
        .collect::<Result<_, _>>()?;
    Ok(GuardSettings {
        mode,
        allow_dhcp: raw.guard_allow_dhcp.unwrap_or(false),
        allowed_addresses,
        allowed_ethertypes,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::datapath::FastPath;
    use serde_json::json;

    fn conf(extra: Value) -> Vec<u8> {
        let mut v = json!({"cniVersion": "1.0.0", "name": "pods", "type": "netshim"});
        for (k, x) in extra.as_object().unwrap() {
            v[k] = x.clone();
        }
        serde_json::to_vec(&v).unwrap()
    }

    #[test]
    fn keys_become_attach_options() {
        let c = parse(&conf(json!({
            "tc_backend": "mirred", "queues": 4, "tap_uid": 1000, "tap_gid": 100,
            "fast_path": "off", "txqueuelen": 500, "runtimeConfig": {"x": 1}
        })))
        .unwrap();
        assert_eq!(c.attach.backend, TcBackend::Mirred);
        assert_eq!(c.attach.queues, 4);
        assert_eq!(
            (c.attach.tap_owner, c.attach.tap_group),
            (Some(1000), Some(100))
        );
        assert_eq!(c.attach.fast_path, FastPath::Off);
        assert_eq!(c.attach.txqueuelen, Some(500));
        assert!(c.prev_result.is_none());
        assert_eq!(c.tap_name, None);
        assert!(
            c.report_tap,
            "the tap is in the result unless asked otherwise"
        );
        assert!(
            !parse(&conf(json!({"report_tap": false})))
                .unwrap()
                .report_tap
        );
        assert_eq!(
            parse(&conf(json!({"report_tap": "no"}))).unwrap_err().code,
            INVALID_CONFIG
        );
        let named = parse(&conf(
            json!({"tap_name": "x234567890abcde", "model": "none"}),
        ))
        .unwrap();
        assert_eq!(named.tap_name.as_deref(), Some("x234567890abcde"));
        let d = parse(&conf(json!({}))).unwrap();
        assert_eq!(d.attach.model, InternetworkingModel::TcFilter);
        assert_eq!((d.attach.backend, d.attach.queues), (TcBackend::Ebpf, 1));
    }

    #[test]
    fn guard_keys_become_guard_settings() {
        let c = parse(&conf(json!({
            "guard": "log",
            "guard_allow_dhcp": true,
            "allowed_addresses": ["10.0.0.5", "fd00::/64"],
            "guard_allowed_ethertypes": ["0x88b5", 35000],
        })))
        .unwrap();
        let g = &c.attach.guard;
        assert_eq!(g.mode, crate::guard::GuardMode::Log);
        assert!(g.allow_dhcp && c.attach.guard_explicit);
        assert_eq!(g.allowed_addresses[0], "10.0.0.5/32".parse().unwrap());
        assert_eq!(g.allowed_ethertypes, vec![0x88b5, 35000]);
        // Defaults: enforce, not asked for.
        let c = parse(&conf(json!({}))).unwrap();
        assert_eq!(c.attach.guard, GuardSettings::default());
        assert!(!c.attach.guard_explicit);
        // Asked for where there is no eBPF datapath, or bad values: invalid configuration.
        for bad in [
            json!({"guard": "enforce", "tc_backend": "mirred"}),
            json!({"guard": "log", "model": "macvtap"}),
            json!({"guard": "strict"}),
            json!({"allowed_addresses": ["10.0.0.0/33"]}),
            json!({"guard_allowed_ethertypes": ["0x0806"]}),
        ] {
            let e = parse(&conf(bad.clone())).unwrap_err();
            assert_eq!(e.code, INVALID_CONFIG, "{bad}: {e:?}");
        }
        // Off with mirred is fine, and so is mirred without a guard key.
        assert!(parse(&conf(json!({"guard": "off", "tc_backend": "mirred"}))).is_ok());
        assert!(parse(&conf(json!({"tc_backend": "mirred"}))).is_ok());
    }

    #[test]
    fn each_kind_of_bad_input_has_its_code() {
        let code = |b: &[u8]| parse(b).unwrap_err().code;
        assert_eq!(code(b"{not json"), DECODING_FAILURE);
        assert_eq!(code(b"[]"), DECODING_FAILURE);
        assert_eq!(code(&vec![b' '; MAX_CONFIG_BYTES + 1]), DECODING_FAILURE);
        assert_eq!(
            code(br#"{"cniVersion":"0.2.0","name":"n","type":"netshim"}"#),
            version::check("0.2.0").unwrap_err().code
        );
        assert_eq!(
            code(br#"{"cniVersion":"1.0.0","type":"netshim"}"#),
            INVALID_CONFIG
        );
        assert_eq!(code(&conf(json!({"model": "bridge"}))), INVALID_CONFIG);
        assert_eq!(code(&conf(json!({"queues": 0}))), INVALID_CONFIG);
        assert_eq!(code(&conf(json!({"queues": "2"}))), INVALID_CONFIG);
        assert_eq!(
            code(&conf(json!({"model": "macvtap", "tc_backend": "ebpf"}))),
            INVALID_CONFIG
        );
        for bad in [
            json!(""),
            json!("x234567890abcdef"),
            json!("."),
            json!(".."),
            json!("a/b"),
            json!("tap0_kata"),
            json!(7),
        ] {
            assert_eq!(
                code(&conf(json!({ "tap_name": bad }))),
                INVALID_CONFIG,
                "{bad}"
            );
        }
        assert_eq!(
            code(&conf(json!({"tap_name": "vm0", "model": "macvtap"}))),
            INVALID_CONFIG
        );
        for (key, bad, why) in [
            (
                "tap_uid",
                json!(4294967295u64),
                "tap_uid 4294967295 is (uid_t)-1",
            ),
            (
                "tap_gid",
                json!(99999999999u64),
                "tap_gid 99999999999 is out of range",
            ),
            (
                "tap_uid",
                json!(-1),
                "tap_uid -1 is out of range (0..=4294967294)",
            ),
            ("tap_uid", json!("1000"), "tap_uid \"1000\" is not a number"),
            ("tap_gid", json!(1.5), "tap_gid \"1.5\" is not a number"),
        ] {
            let e = parse(&conf(json!({ key: bad }))).unwrap_err();
            assert_eq!(e.code, INVALID_CONFIG, "{key} {bad}");
            assert!(e.msg.contains(why), "{key} {bad}: {}", e.msg);
        }
        let max = parse(&conf(json!({"tap_uid": 4294967294u64, "tap_gid": 0}))).unwrap();
        assert_eq!(
            (max.attach.tap_owner, max.attach.tap_group),
            (Some(4294967294), Some(0))
        );
        assert_eq!(
            code(&conf(
                json!({"prevResult": {"ips": [{"address": "10.0.0.2/24", "interface": 0}]}})
            )),
            INVALID_CONFIG
        );
    }

    /// libcni converts prevResult to the configuration's version; a hand-driven chain may
    /// not: netshim does.
    #[test]
    fn prev_result_is_converted_to_the_configurations_version() {
        let prev = json!({"cniVersion": "1.0.0",
            "interfaces": [{"name": "eth0", "sandbox": "/run/netns/p"}],
            "ips": [{"address": "10.0.0.2/24", "interface": 0}]});
        let mut bytes = conf(json!({ "prevResult": prev }));
        let mut v: Value = serde_json::from_slice(&bytes).unwrap();
        v["cniVersion"] = json!("0.4.0");
        bytes = serde_json::to_vec(&v).unwrap();
        let prev = parse(&bytes).unwrap().prev_result.unwrap();
        assert_eq!(prev.cni_version, "0.4.0");
        assert_eq!(prev.ips[0].version.as_deref(), Some("4"));
    }

    #[test]
    fn peek_version_reads_only_supported_versions() {
        assert_eq!(
            peek_version(br#"{"cniVersion":"1.1.0"}"#).as_deref(),
            Some("1.1.0")
        );
        assert_eq!(peek_version(br#"{"cniVersion":"0.1.0"}"#), None);
        assert_eq!(peek_version(b"nope"), None);
    }
}
