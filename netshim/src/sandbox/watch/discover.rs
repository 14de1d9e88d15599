//! What the netns already hands to the VM when watch starts, read back from the host, and
//! the endpoint indexes that are taken.

use std::collections::BTreeSet;

use netshim_common::from_fixed;
use rtnetlink::packet_route::link::InfoKind;

use super::{free_index, Watcher};
use crate::{
    datapath::{ebpf, mirred, Dev},
    model::{self, macvtap, Plugged, TapDatapath, VmSide},
    sandbox::Survey,
    Error, Result,
};

impl Watcher {
    /// Reads back what the netns already hands to the VM: endpoints recorded in the eBPF
    /// pins, taps whose mirred filter redirects to a pod device, macvtaps of the macvtap
    /// model, taps of the `none` model (endpoint N of kata's order), and endpoints the VMM
    /// takes as they are (their position in kata's order).
    pub(super) async fn discover(&mut self, survey: &Survey) -> Result<()> {
        let netns = &self.sandbox.netns;
        let dir = self.sandbox.pin_dir.clone();
        if dir.exists() {
            let records = ebpf::recorded_endpoints(&dir).map_err(Error::ebpf(netns))?;
            for (index, r) in records {
                let name = |f: &[u8]| String::from_utf8_lossy(from_fixed(f)).into_owned();
                let (pod_name, tap) = (name(&r.pod_name), name(&r.tap_name));
                if !survey.is_netshim_tap_name(&tap) {
                    self.foreign.extend([r.pod_ifindex, r.tap_ifindex]);
                    continue;
                }
                self.plugged.insert(
                    r.pod_ifindex,
                    Plugged {
                        pod: Dev {
                            name: pod_name,
                            ifindex: r.pod_ifindex,
                        },
                        index,
                        vm: VmSide::Tap {
                            tap: Dev {
                                name: tap,
                                ifindex: r.tap_ifindex,
                            },
                            datapath: TapDatapath::Ebpf,
                        },
                    },
                );
            }
        }
        let state_dir = self.sandbox.state_dir.clone();
        for (index, tap) in &survey.taps {
            let bound = self.plugged.values().any(|p| match &p.vm {
                VmSide::Tap { tap: t, .. } => t.ifindex == tap.ifindex,
                _ => false,
            });
            if bound {
                continue;
            }
            let (pod_ifindex, vm) = match tap.kind {
                Some(InfoKind::Tun) => {
                    let target = mirred::redirect_target(&self.handle, &Dev::of(tap))
                        .await
                        .map_err(Error::mirred(netns))?;
                    let (pod_ifindex, datapath) = match target.filter(|t| *t != 0) {
                        Some(t) => (Some(t), TapDatapath::Mirred),
                        None => (
                            survey
                                .endpoints
                                .get(*index as usize)
                                .map(|(e, _)| e.ifindex),
                            TapDatapath::None,
                        ),
                    };
                    let vm = VmSide::Tap {
                        tap: Dev::of(tap),
                        datapath,
                    };
                    (pod_ifindex, vm)
                }
                Some(InfoKind::MacVtap) => {
                    let made_here = tap
                        .link
                        .filter(|pod| macvtap::state_path(&state_dir, *pod).exists());
                    (
                        made_here,
                        VmSide::Macvtap {
                            macvtap: Dev::of(tap),
                        },
                    )
                }
                _ => continue,
            };
            let Some(pod) = pod_ifindex.and_then(|i| link(survey, i)) else {
                continue;
            };
            if self.plugged.contains_key(&pod.ifindex) {
                continue;
            }
            self.plugged.insert(
                pod.ifindex,
                Plugged {
                    pod,
                    index: *index,
                    vm,
                },
            );
        }
        for (position, (iface, class)) in survey.endpoints.iter().enumerate() {
            if class.kind.uses_model() || self.plugged.contains_key(&iface.ifindex) {
                continue;
            }
            let used = self.used_indices(survey)?;
            let position = position as u32;
            let index = if used.contains(&position) {
                match free_index(&used) {
                    Some(i) => i,
                    None => continue,
                }
            } else {
                position
            };
            let queues = self.options.attach.queues;
            let plug = model::handover(index, iface, class, queues);
            self.plugged.insert(iface.ifindex, plug.plugged);
        }
        Ok(())
    }

    /// An already attached netns must be attached the way the watcher would attach new
    /// endpoints: one sandbox, one datapath.
    pub(super) fn check_datapath(&self) -> Result<()> {
        let want = self
            .options
            .attach
            .model
            .describe(self.options.attach.backend);
        for p in self.plugged.values() {
            let comparable = match &p.vm {
                VmSide::Tap { datapath, .. } => *datapath != TapDatapath::None,
                VmSide::Macvtap { .. } => true,
                VmSide::Handover { .. } => false,
            };
            if comparable && p.datapath() != want {
                return Err(Error::AlreadyAttached {
                    netns: self.sandbox.netns.to_string(),
                    detail: format!(
                        "{} -> {} uses {}, but watch was asked for {want}",
                        p.pod.name,
                        p.vm_device().unwrap_or_default(),
                        p.datapath()
                    ),
                });
            }
        }
        Ok(())
    }

    /// Endpoint indexes taken: by what was handed to the VM, by any `tap<N>_kata` device and
    /// by any record in the eBPF pins.
    pub(super) fn used_indices(&self, survey: &Survey) -> Result<BTreeSet<u32>> {
        let mut used: BTreeSet<u32> = self.plugged.values().map(|p| p.index).collect();
        used.extend(survey.taps.iter().map(|(i, _)| *i));
        let dir = &self.sandbox.pin_dir;
        if dir.exists() {
            let records =
                ebpf::recorded_endpoints(dir).map_err(Error::ebpf(&self.sandbox.netns))?;
            used.extend(records.iter().map(|(i, _)| *i));
        }
        Ok(used)
    }
}

/// The link with `ifindex`, endpoint or not.
fn link(survey: &Survey, ifindex: u32) -> Option<Dev> {
    survey
        .endpoints
        .iter()
        .map(|(i, _)| Dev::of(i))
        .chain(survey.skipped.iter().map(|s| Dev {
            name: s.name.clone(),
            ifindex: s.ifindex,
        }))
        .find(|d| d.ifindex == ifindex)
}
