//! `netshim detach`: remove everything attach made, and nothing else.
//!
//! What is netshim's: the `tap<N>_kata` tun devices, the sandbox's bpffs directory (and with
//! it the TCX links), and the ingress qdiscs of kata's mirred datapath on the taps and on
//! the pod devices they pair with. Detaching a netns that has none of these succeeds and
//! says so (CNI DEL semantics).

use super::{survey, Strictness, Survey};
use crate::{
    backend::{ebpf, mirred, Dev},
    endpoint::SystemProbe,
    model::macvtap,
    netns::Netns,
    pins, state, Error, Result,
};

/// What detach removed.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct DetachReport {
    pub netns: String,
    pub removed_taps: Vec<String>,
    pub removed_pin_dir: Option<std::path::PathBuf>,
    /// Devices whose mirred ingress qdisc was removed.
    pub removed_mirred: Vec<String>,
    /// Macvtaps of the macvtap model removed (their pod devices restored).
    pub removed_macvtaps: Vec<String>,
}

impl DetachReport {
    pub fn removed_anything(&self) -> bool {
        !self.removed_taps.is_empty()
            || self.removed_pin_dir.is_some()
            || !self.removed_mirred.is_empty()
            || !self.removed_macvtaps.is_empty()
    }
}

/// Detaches `netns`.
pub fn detach(netns: &Netns) -> Result<DetachReport> {
    let netns = netns.clone();
    netns.clone().run(move |handle| async move {
        let survey = survey(&handle, &netns, Strictness::List, &SystemProbe::default()).await?;
        let mut report = DetachReport {
            netns: netns.arg.clone(),
            ..DetachReport::default()
        };

        let dir = pins::sandbox_dir(netns.cookie);
        if dir.exists() {
            ebpf::detach_sandbox(&handle, &dir)
                .await
                .map_err(|source| Error::Ebpf {
                    netns: netns.to_string(),
                    source: Box::new(source),
                })?;
            report.removed_pin_dir = Some(dir);
        }

        for (pod, tap) in mirred_pairs(&survey) {
            let on_tap = mirred::ingress_qdisc(&handle, &tap)
                .await
                .map_err(|source| Error::Mirred {
                    netns: netns.to_string(),
                    source: Box::new(source),
                })?;
            if on_tap != mirred::IngressQdisc::Ingress {
                continue;
            }
            mirred::disconnect(&handle, &pod, &tap)
                .await
                .map_err(|source| Error::Mirred {
                    netns: netns.to_string(),
                    source: Box::new(source),
                })?;
            report.removed_mirred.push(pod.name.clone());
            report.removed_mirred.push(tap.name.clone());
        }

        let state_dir = state::sandbox_dir(netns.cookie);
        for (_, mvt) in &survey.taps {
            if mvt.kind.as_deref() != Some("macvtap") {
                continue;
            }
            // Only macvtaps netshim's model made (it left a state file for the pod device);
            // a macvtap someone else named like ours stays.
            let Some(pod_ifindex) = mvt.link else {
                continue;
            };
            if !macvtap::state_path(&state_dir, pod_ifindex).exists() {
                continue;
            }
            macvtap::disconnect(&handle, &mvt.name, pod_ifindex, &state_dir)
                .await
                .map_err(|source| Error::Macvtap {
                    netns: netns.to_string(),
                    source: Box::new(source),
                })?;
            report.removed_macvtaps.push(mvt.name.clone());
        }
        state::remove_sandbox_dir_if_empty(&state_dir);

        for (_, tap) in &survey.taps {
            if tap.kind.as_deref() != Some("tun") {
                continue;
            }
            let dev = Dev {
                name: tap.name.clone(),
                ifindex: tap.ifindex,
            };
            delete_link(&handle, &dev)
                .await
                .map_err(|source| Error::Netlink {
                    op: "RTM_DELLINK",
                    target: dev.name.clone(),
                    netns: netns.to_string(),
                    source: Box::new(source),
                })?;
            report.removed_taps.push(dev.name);
        }
        Ok(report)
    })
}

/// Pod device ↔ tap pairs as attach made them: endpoint N (kata's order) ↔ `tap<N>_kata`.
pub(crate) fn mirred_pairs(survey: &Survey) -> Vec<(Dev, Dev)> {
    survey
        .endpoints
        .iter()
        .enumerate()
        .filter_map(|(index, (pod, _))| {
            let tap = survey.tap(index as u32)?;
            Some((
                Dev {
                    name: pod.name.clone(),
                    ifindex: pod.ifindex,
                },
                Dev {
                    name: tap.name.clone(),
                    ifindex: tap.ifindex,
                },
            ))
        })
        .collect()
}

/// Deletes a link; one that is already gone is fine.
pub(crate) async fn delete_link(
    handle: &rtnetlink::Handle,
    dev: &Dev,
) -> std::result::Result<(), rtnetlink::Error> {
    match handle.link().del(dev.ifindex).execute().await {
        Ok(()) => Ok(()),
        Err(rtnetlink::Error::NetlinkError(e)) if e.raw_code() == -libc::ENODEV => Ok(()),
        Err(e) => Err(e),
    }
}
