//! attach's [`AttachOptions::needs_tap`](super::AttachOptions::needs_tap): the pod device
//! that must end up with a tap or macvtap (the CNI plugin's CNI_IFNAME). attach checks it
//! before it changes anything, so an ADD for an absent interface, `lo`, an interface kata
//! skips or an endpoint the VMM takes as it is (physical, vhost-user) leaves nothing behind.

use super::{AttachReport, Survey};
use crate::{endpoint::EndpointKind, netns::Netns, Error, Result};

/// Refuses a survey in which `device` would get no tap or macvtap (attach's clean path, and
/// after it took a killed run's leftovers away).
pub(super) fn check_survey(netns: &Netns, survey: &Survey, device: &str) -> Result<()> {
    let endpoint = survey.endpoints.iter().find(|(i, _)| i.name == device);
    let skipped = survey.skipped.iter().find(|s| s.name == device);
    let detail = match (endpoint, skipped) {
        (Some((_, class)), _) if class.kind.uses_model() || class.kind == EndpointKind::Macvtap => {
            return Ok(())
        }
        (Some((_, class)), _) => handed_over(class.kind.as_str()),
        (None, Some(s)) => format!("it is not an endpoint ({})", s.reason),
        (None, None) => {
            let names: Vec<&str> = survey
                .endpoints
                .iter()
                .map(|(i, _)| i.name.as_str())
                .chain(survey.skipped.iter().map(|s| s.name.as_str()))
                .collect();
            format!(
                "the netns has no such interface (it has {})",
                names.join(", ")
            )
        }
    };
    Err(refused(netns, device, detail))
}

/// Refuses an attached netns whose recorded endpoints give `device` no tap or macvtap
/// (attach's already-attached path, which then changes nothing).
pub(super) fn check_recorded(netns: &Netns, recorded: &AttachReport, device: &str) -> Result<()> {
    let endpoint = recorded
        .endpoints
        .iter()
        .find(|e| e.endpoint.name == device);
    let detail = match endpoint {
        Some(e) if e.tap.is_some() || e.macvtap.is_some() => return Ok(()),
        Some(e) => handed_over(e.attachment.as_str()),
        None => {
            let names: Vec<&str> = recorded
                .endpoints
                .iter()
                .map(|e| e.endpoint.name.as_str())
                .collect();
            format!(
                "it is not one of the endpoints attached already ({}); a netns attached \
                 before {device} existed keeps its endpoints: netshim must be the last \
                 plugin of the last network (DEL, then ADD again, re-attaches everything)",
                names.join(", ")
            )
        }
    };
    Err(refused(netns, device, detail))
}

fn handed_over(kind: &str) -> String {
    format!("it is a {kind} endpoint, which the VMM takes as it is")
}

fn refused(netns: &Netns, device: &str, detail: String) -> Error {
    Error::NoTapFor {
        netns: netns.to_string(),
        device: device.to_owned(),
        detail,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        endpoint::{Classified, SkipReason},
        interfaces::Interface,
        sandbox::SkippedInterface,
    };

    fn survey() -> Survey {
        let endpoint = |name: &str, ifindex, kind| {
            let class = Classified {
                kind,
                pci_address: None,
                driver: None,
                vhost_user_socket: None,
            };
            (Interface::for_test(name, ifindex, None), class)
        };
        Survey {
            endpoints: vec![
                endpoint("eth0", 2, EndpointKind::Veth),
                endpoint("mvt0", 3, EndpointKind::Macvtap),
                endpoint("ens5", 4, EndpointKind::Physical),
                endpoint("vhu0", 5, EndpointKind::VhostUser),
            ],
            skipped: vec![SkippedInterface {
                name: "lo".into(),
                ifindex: 1,
                reason: SkipReason::Loopback,
                detail: None,
            }],
            taps: Vec::new(),
            custom_taps: Default::default(),
            interfaces: Vec::new(),
        }
    }

    #[test]
    fn only_model_endpoints_and_macvtaps_get_a_tap() {
        let netns = Netns::resolve("/proc/self/ns/net").unwrap();
        let s = survey();
        assert!(check_survey(&netns, &s, "eth0").is_ok());
        assert!(check_survey(&netns, &s, "mvt0").is_ok());
        for (device, says) in [
            ("ens5", "it is a physical endpoint"),
            ("vhu0", "it is a vhost-user endpoint"),
            ("lo", "it is not an endpoint (loopback)"),
            (
                "eth9",
                "no such interface (it has eth0, mvt0, ens5, vhu0, lo)",
            ),
        ] {
            let e = check_survey(&netns, &s, device).unwrap_err();
            assert!(matches!(e, Error::NoTapFor { .. }), "{e}");
            let text = e.to_string();
            assert!(text.starts_with(&format!("{device} in netns ")), "{text}");
            assert!(text.contains(says), "{text}");
            assert_eq!(e.exit_code(), crate::error::EXIT_INVALID_INPUT);
        }
    }
}
