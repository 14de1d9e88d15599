//! ADD, DEL, CHECK, STATUS and GC: each turns the request into a netshim operation.

use super::{
    config::NetConf,
    env::CniEnv,
    error::{CniError, CHECK_FAILED, INTERFACE_REFUSED, INVALID_CONFIG, NOT_AVAILABLE},
    result::{CniResult, ResultInterface},
};
use crate::{
    model::InternetworkingModel,
    netns::{Netns, NetnsError},
    pins,
    sandbox::{self, AttachReport, EndpointReport},
    state, Error,
};

/// The character device every tap is made through.
const TUN_DEVICE: &str = "/dev/net/tun";

/// ADD: attaches the netns and returns `prevResult` (or an empty result) with the tap of
/// CNI_IFNAME's endpoint added: `{"name": "tap<N>_kata" (or `tap_name`), "mac": <the pod interface's MAC>,
/// "sandbox": CNI_NETNS}`.
pub fn add(env: &CniEnv, conf: &NetConf) -> Result<CniResult, CniError> {
    env.require("CNI_CONTAINERID", &env.container_id)?;
    let netns_arg = env.require("CNI_NETNS", &env.netns)?;
    let ifname = env.require("CNI_IFNAME", &env.ifname)?;
    let netns = resolve(netns_arg, "ADD")?;
    let mut options = conf.attach.clone();
    if let Some(tap) = &conf.tap_name {
        options.tap_names.insert(ifname.to_owned(), tap.clone());
    }
    let report =
        sandbox::attach(&netns, &options).map_err(|e| CniError::from_netshim("attach", &e))?;
    let endpoint = endpoint_of(&report, ifname, &netns)?;
    let mut result = conf
        .prev_result
        .clone()
        .unwrap_or_else(|| CniResult::empty(&conf.cni_version));
    result.cni_version = conf.cni_version.clone();
    result.put_interface(tap_interface(endpoint, netns_arg)?);
    Ok(result)
}

/// DEL: detaches the netns. Succeeds when CNI_NETNS is empty, when the netns is gone, and
/// when the path is no longer a netns (the runtime unmounted it): then the leftovers of
/// dead namespaces are collected instead.
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
    let ifname = env.require("CNI_IFNAME", &env.ifname)?;
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
    if recorded.model != conf.attach.model.as_str() || recorded.backend != wanted_backend {
        return Err(failed(format!(
            "netns {netns_arg} is attached with model {} backend {:?}, the configuration asks \
             for {} {:?}",
            recorded.model, recorded.backend, conf.attach.model, wanted_backend
        )));
    }
    let endpoint = endpoint_of(&recorded, ifname, &netns)?;
    let tap = tap_interface(endpoint, netns_arg)?;
    if let Some(want) = conf.tap_name.as_ref().filter(|w| **w != tap.name) {
        return Err(failed(format!(
            "{ifname} in netns {netns_arg} is attached with tap {}, the configuration's \
             tap_name is {want}",
            tap.name
        )));
    }
    match prev.interface(&tap.name, netns_arg) {
        Some(listed) if listed.mac == tap.mac => {}
        Some(listed) => {
            return Err(failed(format!(
                "prevResult gives {} in {netns_arg} MAC {:?}, attached with {:?}",
                tap.name, listed.mac, tap.mac
            )))
        }
        None => {
            return Err(failed(format!(
                "prevResult does not list {} in sandbox {netns_arg}",
                tap.name
            )))
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
