//! ADD, DEL, CHECK, STATUS and GC: each turns the request into a netshim operation.

use super::{
    config::NetConf,
    convert,
    env::CniEnv,
    error::{CniError, CHECK_FAILED, INTERFACE_REFUSED, INVALID_CONFIG, NOT_AVAILABLE},
    result::{CniResult, ResultInterface},
    vm_interface,
};
use crate::{
    datapath::TcBackend,
    model::InternetworkingModel,
    netns::{Netns, NetnsError},
    pins,
    sandbox::{self, AttachReport, EndpointReport},
    state, Error,
};

/// The character device every tap is made through.
const TUN_DEVICE: &str = "/dev/net/tun";

/// ADD: attaches the netns and returns `prevResult` (or an empty result), in the
/// configuration's version, with the tap of CNI_IFNAME's endpoint added: `{"name":
/// "tap<N>_kata" (or `tap_name`), "mac": <the pod interface's MAC>, "sandbox": CNI_NETNS}`,
/// then the VM's pseudo-interface and its IP (see [`vm_interface`]). Nothing is changed
/// when CNI_IFNAME is no interface name (code 4) or would get no tap (code 102: absent,
/// `lo`, an interface kata skips, an endpoint the VMM takes as it is).
pub fn add(env: &CniEnv, conf: &NetConf) -> Result<CniResult, CniError> {
    let vm_id = env.require("CNI_CONTAINERID", &env.container_id)?;
    let netns_arg = env.require("CNI_NETNS", &env.netns)?;
    let ifname = env.require_ifname()?;
    let netns = resolve(netns_arg, "ADD")?;
    let mut options = conf.attach.clone();
    if let Some(tap) = tap_name_of(ifname, conf.tap_name.as_deref()) {
        options.tap_names.insert(ifname.to_owned(), tap);
    }
    options.needs_tap = Some(ifname.to_owned());
    let report =
        sandbox::attach(&netns, &options).map_err(|e| CniError::from_netshim("attach", &e))?;
    let endpoint = endpoint_of(&report, ifname, &netns)?;
    let tap = tap_interface(endpoint, netns_arg)?;
    let mut result = conf
        .prev_result
        .clone()
        .unwrap_or_else(|| CniResult::empty(&conf.cni_version));
    convert::into_version(&mut result, &conf.cni_version);
    if conf.report_tap {
        result.put_interface(tap.clone());
        vm_interface::put(&mut result, &tap, ifname, netns_arg, vm_id);
    }
    Ok(result)
}

/// The name of CNI_IFNAME's tap when it is not kata's `tap<N>_kata`: the configuration's
/// `tap_name`; without one, when CNI_IFNAME itself is named like kata's taps (and so may
/// carry the very name its tap would get), `<CNI_IFNAME>-vm` (CNI_IFNAME cut to 12 bytes), so
/// that the pod interface and its tap never need one name. A `tap_name` equal to CNI_IFNAME
/// is the configuration's own contradiction: attach refuses it as a conflict (code 101).
///
/// podman (4.x, CNI backend) hands netshim such a pod interface on `podman network reload`
/// when the result lists netshim's tap: it takes the container's interface name for the new
/// ADD from the previous result's interfaces that have a `sandbox`, at random (a Go map), so
/// the bridge plugin makes the pod veth under the tap's name (see `report_tap`).
pub(crate) fn tap_name_of(ifname: &str, configured: Option<&str>) -> Option<String> {
    if configured.is_some() || crate::tap::name::parse(ifname).is_none() {
        return configured.map(str::to_owned);
    }
    let mut stem = ifname.to_owned();
    while stem.len() > crate::tap::name::MAX_IFNAME_LEN - TAP_BESIDE_SUFFIX.len() {
        stem.pop();
    }
    Some(format!("{stem}{TAP_BESIDE_SUFFIX}"))
}

/// What [`tap_name_of`] appends to a CNI_IFNAME that has its tap's name.
const TAP_BESIDE_SUFFIX: &str = "-vm";

/// DEL: detaches the netns by what netshim recorded for it (no configuration needed).
/// Succeeds when CNI_NETNS is empty, when nothing is attached, when the netns is gone, and
/// when the path is no longer a netns (the runtime unmounted it): then the leftovers of dead
/// namespaces are collected instead.
pub fn del(env: &CniEnv) -> Result<(), CniError> {
    let Some(netns_arg) = env.netns.as_deref() else {
        return Ok(());
    };
    let result = match Netns::resolve(netns_arg) {
        Ok(netns) => sandbox::detach(&netns).map(drop),
        Err(e) if e.is_gone() || matches!(e, NetnsError::NotNetns { .. }) => {
            sandbox::collect_dead().map(drop)
        }
        Err(e) => Err(e.into()),
    };
    result.map_err(|e| CniError::from_netshim("detach", &e))
}

/// CHECK: the netns is attached as recorded, with the configured model and backend; the
/// tap of CNI_IFNAME is in `prevResult`, exists, and (tcfilter) is connected.
pub fn check(env: &CniEnv, conf: &NetConf) -> Result<(), CniError> {
    env.require("CNI_CONTAINERID", &env.container_id)?;
    let netns_arg = env.require("CNI_NETNS", &env.netns)?;
    let ifname = env.require_ifname()?;
    let prev = conf.prev_result.as_ref().ok_or_else(|| {
        CniError::new(INVALID_CONFIG, "CHECK needs prevResult (the result of ADD)")
    })?;
    let netns = resolve(netns_arg, "CHECK")?;
    let failed = |msg: String| CniError::new(CHECK_FAILED, msg);
    let commit = state::sandbox_dir(netns.cookie).join(state::COMMIT_FILE);
    let recorded: AttachReport = state::read_json(&commit).ok_or_else(|| {
        failed(format!(
            "netns {netns_arg} is not attached ({} is missing)",
            commit.display()
        ))
    })?;
    let wanted_backend =
        (conf.attach.model == InternetworkingModel::TcFilter).then_some(conf.attach.backend);
    if recorded.model != conf.attach.model || recorded.backend != wanted_backend {
        return Err(failed(format!(
            "netns {netns_arg} is attached with {}, the configuration asks for {}",
            model_words(recorded.model.as_str(), recorded.backend),
            model_words(conf.attach.model.as_str(), wanted_backend)
        )));
    }
    let endpoint = endpoint_of(&recorded, ifname, &netns)?;
    let tap = tap_interface(endpoint, netns_arg)?;
    let wanted = tap_name_of(ifname, conf.tap_name.as_deref());
    if let Some(want) = wanted.filter(|w| *w != tap.name) {
        return Err(failed(format!(
            "{ifname} in netns {netns_arg} is attached with tap {}, the configuration asks \
             for tap {want}",
            tap.name
        )));
    }
    // With report_tap off the result never listed the tap: nothing of it to compare.
    if conf.report_tap {
        match prev.interface(&tap.name, netns_arg) {
            Some(listed) if listed.mac == tap.mac => {}
            Some(listed) => {
                return Err(failed(format!(
                    "prevResult gives {} in {netns_arg} {}, it is attached with {}",
                    tap.name,
                    mac_words(listed.mac.as_deref()),
                    mac_words(tap.mac.as_deref())
                )))
            }
            None => {
                return Err(failed(format!(
                    "prevResult does not list {} in sandbox {netns_arg}",
                    tap.name
                )))
            }
        }
    }
    let status = sandbox::status(&netns).map_err(|e| CniError::from_netshim("status", &e))?;
    let up = match conf.attach.model {
        InternetworkingModel::MacVtap => status.macvtaps.iter().any(|m| m.name == tap.name),
        model => status.endpoints.iter().any(|s| {
            s.endpoint.name == ifname
                && s.tap.as_deref() == Some(tap.name.as_str())
                && (s.connected || model == InternetworkingModel::None)
        }),
    };
    if !up {
        return Err(failed(format!(
            "{} of {ifname} in netns {netns_arg} is missing or not connected",
            tap.name
        )));
    }
    // Anything else the records name that is not there.
    if !status.problems.is_empty() {
        return Err(failed(format!(
            "netns {netns_arg} is attached but broken: {}",
            status.problems.join("; ")
        )));
    }
    Ok(())
}

/// STATUS: ready when bpffs is (or can be) mounted at /sys/fs/bpf and taps can be made.
pub fn status() -> Result<(), CniError> {
    let unavailable = |msg: String| CniError::new(NOT_AVAILABLE, msg);
    pins::ensure_bpffs().map_err(|e| unavailable(format!("no bpffs at {}: {e}", pins::BPFFS)))?;
    if !std::path::Path::new(TUN_DEVICE).exists() {
        return Err(unavailable(format!("{TUN_DEVICE} is missing: no taps")));
    }
    Ok(())
}

/// GC: collects the sandboxes of namespaces that are gone (what `netshim gc` does); live
/// attachments are never touched.
pub fn gc() -> Result<(), CniError> {
    sandbox::collect_dead()
        .map(drop)
        .map_err(|e| CniError::from_netshim("gc", &e))
}

/// "model tcfilter, tc backend ebpf", "model macvtap": how CHECK's messages name an attachment.
fn model_words(model: &str, backend: Option<TcBackend>) -> String {
    match backend {
        Some(b) => format!("model {model}, tc backend {b}"),
        None => format!("model {model}"),
    }
}

/// "MAC 02:00:00:00:00:01", "no MAC".
fn mac_words(mac: Option<&str>) -> String {
    mac.map_or_else(|| "no MAC".to_owned(), |m| format!("MAC {m}"))
}

fn resolve(arg: &str, command: &str) -> Result<Netns, CniError> {
    Netns::resolve(arg).map_err(|e| CniError::from_netshim(command, &Error::from(e)))
}

/// The attached endpoint named CNI_IFNAME.
fn endpoint_of<'a>(
    report: &'a AttachReport,
    ifname: &str,
    netns: &Netns,
) -> Result<&'a EndpointReport, CniError> {
    report
        .endpoints
        .iter()
        .find(|e| e.endpoint.name == ifname)
        .ok_or_else(|| {
            let names: Vec<&str> = report
                .endpoints
                .iter()
                .map(|e| e.endpoint.name.as_str())
                .collect();
            CniError::new(
                INTERFACE_REFUSED,
                format!("CNI_IFNAME {ifname} is not an endpoint netshim attached in netns {netns}"),
            )
            .with_details(format!(
                "attached endpoints: [{}]; a netns attached before {ifname} existed keeps its \
                 endpoints: netshim must be the last plugin of the last network",
                names.join(", ")
            ))
        })
}

/// The result entry of an endpoint's tap (or macvtap): the guest uses the pod interface's
/// MAC, and the tap lives in the sandbox netns.
fn tap_interface(endpoint: &EndpointReport, sandbox: &str) -> Result<ResultInterface, CniError> {
    let name = endpoint
        .tap
        .as_ref()
        .map(|t| t.name.clone())
        .or_else(|| endpoint.macvtap.as_ref().map(|m| m.name.clone()))
        .ok_or_else(|| {
            CniError::new(
                INTERFACE_REFUSED,
                format!(
                    "{} is a {} endpoint: the VMM takes it as it is, there is no tap to report",
                    endpoint.endpoint.name, endpoint.attachment
                ),
            )
        })?;
    Ok(ResultInterface {
        name,
        mac: endpoint.endpoint.mac.map(|m| m.to_string()),
        mtu: None,
        sandbox: Some(sandbox.to_owned()),
        extra: Default::default(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// CHECK's messages are words, not Rust's debug text.
    #[test]
    fn check_messages_name_models_and_macs_plainly() {
        assert_eq!(
            model_words("tcfilter", Some(TcBackend::Ebpf)),
            "model tcfilter, tc backend ebpf"
        );
        assert_eq!(model_words("macvtap", None), "model macvtap");
        assert_eq!(
            mac_words(Some("02:00:00:00:00:01")),
            "MAC 02:00:00:00:00:01"
        );
        assert_eq!(mac_words(None), "no MAC");
    }

    /// The tap of CNI_IFNAME never gets CNI_IFNAME's own name by netshim's choice (podman's
    /// reload can hand netshim a pod interface named like the tap).
    #[test]
    fn a_pod_interface_named_like_a_kata_tap_gets_the_tap_beside_it() {
        assert_eq!(
            tap_name_of("eth0", None),
            None,
            "tap<N>_kata, as kata names it"
        );
        assert_eq!(
            tap_name_of("eth0", Some("vmtap0")).as_deref(),
            Some("vmtap0")
        );
        assert_eq!(
            tap_name_of("tap0_kata", None).as_deref(),
            Some("tap0_kata-vm")
        );
        assert_eq!(
            tap_name_of("tap31_kata", None).as_deref(),
            Some("tap31_kata-vm")
        );
        // The configuration's name is kept, even when it is CNI_IFNAME (a conflict then).
        assert_eq!(
            tap_name_of("vmtap0", Some("vmtap0")).as_deref(),
            Some("vmtap0")
        );
        for name in ["tap0_kata-vm", "tap31_kata-vm"] {
            assert!(crate::tap::validate_name(name).is_ok(), "{name}");
            assert_eq!(crate::tap::name::validate_custom(name), Ok(()), "{name}");
        }
        // The next reload may pick the tap's name: that pod interface keeps kata's naming.
        assert_eq!(tap_name_of("tap0_kata-vm", None), None);
    }
}
