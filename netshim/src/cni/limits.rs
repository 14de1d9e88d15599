//! Rate limits in a network configuration, highest first:
//! 1. `runtimeConfig` (what the runtime passes per pod): kata's annotation names
//!    `io.katacontainers.config.hypervisor.rx_rate_limiter_max_rate` / `tx_…` (bits/s), or
//!    the CNI `bandwidth` capability (`ingressRate`/`egressRate` bits/s,
//!    `ingressBurst`/`egressBurst` bits; ingress is into the pod, so rx);
//! 2. `args.cni` (the CNI conventions' place) or `args`, with kata's annotation names;
//! 3. netshim's own keys: `rx_rate`, `tx_rate` (bits/s, or text such as "100M"),
//!    `rx_burst`, `tx_burst` (bytes), `limit_profile` (netshim | kata).
//!
//! A value may be a number or a string (annotations are strings). A bad one is refused with
//! its key (CNI error 7, exit 2 from the CLI).

use serde_json::Value;

use crate::limit::{
    rate::{self, RateError},
    request::keys,
    LimitRequest,
};

/// The limits `conf` (the whole network configuration) asks for; the error names the key.
pub fn from_conf(conf: &Value) -> Result<LimitRequest, String> {
    let own = own_keys(conf)?;
    let args = conf.get("args");
    let args = args
        .and_then(|a| a.get("cni"))
        .map(|a| annotations(a, "args.cni"))
        .transpose()?
        .unwrap_or_default()
        .over(
            args.map(|a| annotations(a, "args"))
                .transpose()?
                .unwrap_or_default(),
        );
    let runtime = match conf.get("runtimeConfig") {
        Some(rc) => annotations(rc, "runtimeConfig")?.over(bandwidth(rc)?),
        None => LimitRequest::default(),
    };
    Ok(runtime.over(args).over(own))
}

fn text_or_number(
    v: &Value,
    key: &str,
    text: fn(&str) -> Result<u64, RateError>,
    integer: fn(i64) -> Result<u64, RateError>,
) -> Result<u64, String> {
    let r = match v {
        Value::Number(n) => match n.as_i64() {
            Some(i) => integer(i),
            None if n.as_u64().is_some() => Err(RateError::TooFast(n.to_string())),
            None => Err(RateError::NotARate(n.to_string())),
        },
        Value::String(s) => text(s),
        other => return Err(format!("{key}: {other} is not a number or a string")),
    };
    r.map_err(|e| format!("{key}: {e}"))
}

fn rate_at(obj: &Value, name: &str, prefix: &str) -> Result<Option<u64>, String> {
    obj.get(name)
        .map(|v| {
            text_or_number(
                v,
                &format!("{prefix}{name}"),
                rate::parse_rate,
                rate::rate_from_integer,
            )
        })
        .transpose()
}

fn annotations(obj: &Value, place: &str) -> Result<LimitRequest, String> {
    let prefix = format!("{place}.");
    Ok(LimitRequest {
        rx_rate: rate_at(obj, keys::ANNOTATION_RX, &prefix)?,
        tx_rate: rate_at(obj, keys::ANNOTATION_TX, &prefix)?,
        ..LimitRequest::default()
    })
}

/// The CNI `bandwidth` capability (bursts in bits, as the bandwidth plugin takes them).
fn bandwidth(rc: &Value) -> Result<LimitRequest, String> {
    let Some(bw) = rc.get("bandwidth") else {
        return Ok(LimitRequest::default());
    };
    let prefix = "runtimeConfig.bandwidth.";
    let burst = |name: &str| -> Result<Option<u64>, String> {
        bw.get(name)
            .map(|v| {
                let key = format!("{prefix}{name}");
                let bits = text_or_number(v, &key, rate::parse_rate, rate::rate_from_integer)?;
                rate::burst_from_integer((bits / 8) as i64).map_err(|e| format!("{key}: {e}"))
            })
            .transpose()
    };
    Ok(LimitRequest {
        rx_rate: rate_at(bw, "ingressRate", prefix)?,
        rx_burst: burst("ingressBurst")?,
        tx_rate: rate_at(bw, "egressRate", prefix)?,
        tx_burst: burst("egressBurst")?,
        profile: None,
    })
}

fn own_keys(conf: &Value) -> Result<LimitRequest, String> {
    let burst = |name: &str| {
        conf.get(name)
            .map(|v| text_or_number(v, name, rate::parse_burst, rate::burst_from_integer))
            .transpose()
    };
    let profile = conf
        .get("limit_profile")
        .map(|v| match v.as_str() {
            Some(s) => s.parse().map_err(|e| format!("limit_profile: {e}")),
            None => Err(format!("limit_profile: {v} is not a string")),
        })
        .transpose()?;
    Ok(LimitRequest {
        rx_rate: rate_at(conf, "rx_rate", "")?,
        tx_rate: rate_at(conf, "tx_rate", "")?,
        rx_burst: burst("rx_burst")?,
        tx_burst: burst("tx_burst")?,
        profile,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn runtime_config_over_args_over_own_keys() {
        let conf = json!({
            "rx_rate": "1G", "tx_rate": 5000000, "tx_burst": "256k",
            "args": {"cni": {(keys::ANNOTATION_TX): "200000000"}},
            "runtimeConfig": {(keys::ANNOTATION_RX): 100000000}
        });
        let r = from_conf(&conf).unwrap();
        assert_eq!(r.rx_rate, Some(100_000_000));
        assert_eq!(r.tx_rate, Some(200_000_000));
        assert_eq!(r.tx_burst, Some(256 * 1024));
    }

    #[test]
    fn the_bandwidth_capability_is_read_too() {
        let conf = json!({"runtimeConfig": {"bandwidth": {
            "ingressRate": 100000000, "ingressBurst": 1048576, "egressRate": "1G"}}});
        let r = from_conf(&conf).unwrap();
        assert_eq!(r.rx_rate, Some(100_000_000));
        assert_eq!(r.rx_burst, Some(131072), "bits to bytes");
        assert_eq!(r.tx_rate, Some(1_000_000_000));
    }

    #[test]
    fn bad_values_name_their_key() {
        for (conf, key) in [
            (json!({"rx_rate": -1}), "rx_rate"),
            (json!({"tx_rate": "fast"}), "tx_rate"),
            (json!({"rx_burst": 10}), "rx_burst"),
            (json!({"rx_rate": 1e30}), "rx_rate"),
            (json!({"rx_rate": true}), "rx_rate"),
            (json!({"limit_profile": "htb"}), "limit_profile"),
            (
                json!({"runtimeConfig": {(keys::ANNOTATION_RX): "12MBps"}}),
                "runtimeConfig.io.katacontainers",
            ),
            (
                json!({"args": {"cni": {(keys::ANNOTATION_TX): 18446744073709551615u64}}}),
                "args.cni.io.katacontainers",
            ),
        ] {
            let e = from_conf(&conf).unwrap_err();
            assert!(e.starts_with(key), "{conf}: {e}");
        }
    }
}
