//! A device that already has the name of a tap attach (or watch) would make, and that is not
//! netshim's: a bridge, veth or tun-mode tun called `tap0_kata`, or any device called like
//! the CNI `tap_name`. Attach refuses such a netns as a conflict before it changes anything,
//! and hot-plug refuses the endpoint; detach never takes such a device (it is not in the
//! survey's taps, see [`crate::endpoint::could_be_netshims_tap`]).
//!
//! What is netshim's under such a name and is replaced instead: a tap-mode tun `tap<N>_kata`
//! a dead run left (kata #6339), a tun device with a custom name the sandbox's files record,
//! and a macvtap the macvtap model's state files record: the teardown before attach takes
//! them away.

use super::{AttachOptions, Sandbox, Survey};
use rtnetlink::packet_route::link::InfoKind;

use crate::{
    endpoint::{Classified, Probe},
    interfaces::{self, Interface},
    model::{macvtap, InternetworkingModel},
    netns::Netns,
    tap, Error, Result,
};

/// A tap (or macvtap) attach would make for an endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct PlannedTap {
    pub name: String,
    /// Whose it is, for the error: `endpoint 0's tap`, `eth0's tap (the CNI tap_name)`.
    pub owner: String,
    /// A name the configuration chose (CNI `tap_name`), not kata's `tap<N>_kata`.
    pub custom: bool,
}

/// The device attach makes for endpoint `index` (pod device `pod`), if it makes one.
pub(crate) fn planned(
    options: &AttachOptions,
    index: u32,
    pod: &Interface,
    class: &Classified,
) -> Option<PlannedTap> {
    if !class.kind.uses_model() {
        return None;
    }
    let custom = match options.model {
        InternetworkingModel::MacVtap => None,
        InternetworkingModel::TcFilter | InternetworkingModel::None => {
            options.tap_names.get(&pod.name)
        }
    };
    Some(match custom {
        Some(name) => PlannedTap {
            name: name.clone(),
            owner: format!("{}'s tap (the CNI tap_name)", pod.name),
            custom: true,
        },
        None => PlannedTap {
            name: tap::name::tap_for(index),
            owner: match options.model {
                InternetworkingModel::MacVtap => format!("endpoint {index}'s macvtap"),
                _ => format!("endpoint {index}'s tap"),
            },
            custom: false,
        },
    })
}

/// What `existing` is, for the error: `a bridge`, `a tun device in tun mode`, ...
fn describe(existing: &Interface, probe: &dyn Probe) -> String {
    match &existing.kind {
        Some(InfoKind::Tun) => match probe.drvinfo(&existing.name) {
            Ok((driver, bus)) => match tap::mode_from_drvinfo(&driver, &bus) {
                Some(tap::TunMode::Tun) => "a tun device in tun mode".into(),
                Some(tap::TunMode::Tap) => "a tap".into(),
                None => "a tun device".into(),
            },
            Err(_) => "a tun device".into(),
        },
        Some(kind) => {
            let kind = kind.to_string();
            let article = match kind.starts_with(['a', 'e', 'i', 'o', 'u']) {
                true => "an",
                false => "a",
            };
            format!("{article} {kind}")
        }
        None => "a device".into(),
    }
}

/// The conflict: `existing` has the name `planned` needs.
fn taken(netns: &Netns, planned: &PlannedTap, existing: &Interface, probe: &dyn Probe) -> Error {
    Error::TapNameTaken {
        netns: netns.to_string(),
        name: planned.name.clone(),
        what: describe(existing, probe),
        owner: planned.owner.clone(),
        remedy: match planned.custom {
            true => "give tap_name another value, or rename or remove that device",
            false => "rename or remove it",
        },
    }
}

/// Whether the teardown of a dead run's leftovers takes `iface` away (see the module docs).
fn leftover_of_netshim(survey: &Survey, iface: &Interface, state_dir: &std::path::Path) -> bool {
    let in_taps = survey.taps.iter().any(|(_, t)| t.ifindex == iface.ifindex);
    in_taps
        && match iface.kind {
            Some(InfoKind::Tun) => true,
            Some(InfoKind::MacVtap) => iface
                .link
                .is_some_and(|pod| macvtap::state_path(state_dir, pod).exists()),
            _ => false,
        }
}

/// Refuses attaching `survey`'s endpoints when a device that is not netshim's has the name
/// of a tap attach would make for one of them. Changes nothing.
pub(crate) fn refuse_taken_names(
    sandbox: &Sandbox,
    options: &AttachOptions,
    survey: &Survey,
) -> Result<()> {
    for (index, (pod, class)) in survey.endpoints.iter().enumerate() {
        let Some(planned) = planned(options, index as u32, pod, class) else {
            continue;
        };
        let existing = survey.interfaces.iter().find(|i| i.name == planned.name);
        if let Some(existing) = existing {
            if !leftover_of_netshim(survey, existing, &sandbox.state_dir) {
                return Err(taken(&sandbox.netns, &planned, existing, &options.probe));
            }
        }
    }
    Ok(())
}

/// Refuses making `planned` while a device of that name exists (hot-plug: netshim's own
/// leftovers hold their index, which is never handed out). Changes nothing.
pub(crate) async fn refuse_existing(
    handle: &rtnetlink::Handle,
    netns: &Netns,
    planned: &PlannedTap,
    probe: &dyn Probe,
) -> Result<()> {
    let existing = interfaces::by_name(handle, &planned.name)
        .await
        .map_err(|source| Error::Netlink {
            op: "RTM_GETLINK",
            target: planned.name.clone(),
            netns: netns.to_string(),
            source: Box::new(source),
        })?;
    match existing {
        Some(existing) => Err(taken(netns, planned, &existing, probe)),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::endpoint::EndpointKind;

    fn dev(name: &str, kind: Option<&str>) -> Interface {
        Interface::for_test(name, 2, kind)
    }

    fn class(kind: EndpointKind) -> Classified {
        Classified {
            kind,
            pci_address: None,
            driver: None,
            vhost_user_socket: None,
        }
    }

    struct Mode(&'static str);

    impl Probe for Mode {
        fn drvinfo(&self, _: &str) -> std::io::Result<(String, String)> {
            Ok(("tun".into(), self.0.into()))
        }
        fn vhost_user_socket(&self, _: &Interface) -> Option<std::path::PathBuf> {
            None
        }
    }

    #[test]
    fn each_model_plans_its_device_name() {
        let eth0 = dev("eth0", Some("veth"));
        let mut options = AttachOptions::default();
        let p = planned(&options, 0, &eth0, &class(EndpointKind::Veth)).unwrap();
        assert_eq!(p.name, "tap0_kata");
        assert_eq!(p.owner, "endpoint 0's tap");
        options.tap_names.insert("eth0".into(), "vmtap0".into());
        let p = planned(&options, 3, &eth0, &class(EndpointKind::Veth)).unwrap();
        assert_eq!(p.name, "vmtap0");
        assert_eq!(p.owner, "eth0's tap (the CNI tap_name)");
        options.model = InternetworkingModel::MacVtap;
        let p = planned(&options, 1, &eth0, &class(EndpointKind::Macvlan)).unwrap();
        assert_eq!(
            (p.name.as_str(), p.owner.as_str()),
            ("tap1_kata", "endpoint 1's macvtap")
        );
        // Kinds the VMM takes as they are get no device.
        for kind in [
            EndpointKind::Physical,
            EndpointKind::VhostUser,
            EndpointKind::Macvtap,
        ] {
            assert_eq!(planned(&options, 0, &eth0, &class(kind)), None, "{kind}");
        }
    }

    #[test]
    fn the_error_says_what_has_the_name_and_whose_name_it_is() {
        let netns = Netns {
            arg: "pod1".into(),
            path: "/run/netns/pod1".into(),
            inode: 1,
            cookie: 1,
        };
        let planned = PlannedTap {
            name: "tap0_kata".into(),
            owner: "endpoint 0's tap".into(),
            custom: false,
        };
        let e = taken(
            &netns,
            &planned,
            &dev("tap0_kata", Some("bridge")),
            &Mode("tap"),
        );
        assert_eq!(
            e.to_string(),
            "netns pod1 has a bridge named tap0_kata that netshim did not make: netshim names \
             endpoint 0's tap tap0_kata; rename or remove it"
        );
        assert_eq!(e.exit_code(), crate::error::EXIT_CONFLICT);
        let tun = taken(
            &netns,
            &planned,
            &dev("tap0_kata", Some("tun")),
            &Mode("tun"),
        );
        assert!(
            tun.to_string()
                .contains("has a tun device in tun mode named"),
            "{tun}"
        );
        let ipvlan = taken(
            &netns,
            &planned,
            &dev("tap0_kata", Some("ipvlan")),
            &Mode(""),
        );
        assert!(
            ipvlan.to_string().contains("has an ipvlan named"),
            "{ipvlan}"
        );
        let custom = PlannedTap {
            name: "eth0".into(),
            owner: "eth0's tap (the CNI tap_name)".into(),
            custom: true,
        };
        let e = taken(&netns, &custom, &dev("eth0", Some("veth")), &Mode(""));
        assert!(
            e.to_string().ends_with(
                "netshim names eth0's tap (the CNI tap_name) eth0; give tap_name another \
                 value, or rename or remove that device"
            ),
            "{e}"
        );
    }
}
