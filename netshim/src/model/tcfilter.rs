//! kata's default model, tcfilter: each endpoint gets a tap (made as the `none` model makes
//! it) and a traffic-control datapath of [`crate::datapath`] connects pod device and tap:
//! the eBPF classifier ([`ebpf`], pins in bpffs) or kata's u32 + mirred ([`mirred`]).
//! `netshim connect` uses the same datapath between any two devices.

use std::path::PathBuf;

use super::{
    none::{create_tap, remove_tap, tap_plug},
    undo::Undo,
    EndpointDatapath, Model, PlugContext, Plugged, Plugs, TapDatapath, VmSide,
};
use crate::{
    crash::crash_point,
    datapath::{
        ebpf::{self, EbpfDatapath, EbpfObject},
        mirred,
        preload::Preload,
        AttachMode, DatapathKind, Pair, TcBackend,
    },
    guard::GuardSettings,
    interfaces::Interface,
    netns::Netns,
    pins,
    tap::qdisc::QdiscPolicy,
    Error, Result,
};

pub(crate) struct TcFilter;

impl Model for TcFilter {
    fn describe(&self, backend: TcBackend) -> EndpointDatapath {
        EndpointDatapath::TcFilter(backend)
    }

    async fn plug(
        &self,
        cx: &PlugContext<'_>,
        endpoints: &[(u32, &Interface)],
        undo: &mut Undo,
    ) -> Result<Plugs> {
        let options = cx.options;
        let datapath = match options.backend {
            TcBackend::Ebpf => TapDatapath::Ebpf,
            TcBackend::Mirred => TapDatapath::Mirred,
        };
        // kata's mirred setup is the baseline and keeps the kernel's qdisc (see tap::qdisc).
        let qdisc = match options.backend {
            TcBackend::Ebpf => QdiscPolicy::Noqueue,
            TcBackend::Mirred => QdiscPolicy::KernelDefault,
        };
        let mut plugs = Vec::new();
        let mut pairs = Vec::new();
        for &(index, iface) in endpoints {
            let (tap, created) = create_tap(cx, index, iface, qdisc, undo).await?;
            let pair = Pair::new(index, iface, &created, options.fast_path);
            pairs.push(guarded_pair(pair, iface, &options.guard));
            plugs.push(tap_plug(index, iface, tap, &created, datapath));
        }
        if pairs.is_empty() {
            return Ok(Plugs::without_datapath(plugs, DatapathKind::None));
        }
        let preload = cx
            .preload
            .and_then(|p| p.lock().unwrap_or_else(|e| e.into_inner()).take());
        let c = connect_pairs(
            cx.handle,
            cx.netns,
            options.backend,
            (options.ebpf_attach, options.ebpf_object.as_ref()),
            &pairs,
            preload,
            undo,
        )
        .await?;
        if c.backend == TcBackend::Ebpf {
            for (plug, pair) in plugs.iter_mut().zip(&pairs) {
                plug.redirect = Some(pair.redirects());
            }
        }
        Ok(Plugs {
            endpoints: plugs,
            backend: Some(c.backend),
            datapath: c.datapath,
            pin_dir: c.pin_dir,
        })
    }

    async fn unplug(
        &self,
        handle: &rtnetlink::Handle,
        netns: &Netns,
        plugged: &Plugged,
    ) -> Result<()> {
        let VmSide::Tap { tap, datapath } = &plugged.vm else {
            return Ok(());
        };
        match datapath {
            TapDatapath::Ebpf => {
                let dir = pins::sandbox_dir(netns.cookie);
                ebpf::disconnect_pair(handle, &dir, &plugged.pod.name, &tap.name)
                    .await
                    .map_err(Error::ebpf(netns))?;
            }
            TapDatapath::Mirred => {
                mirred::disconnect(handle, &plugged.pod, tap)
                    .await
                    .map_err(Error::mirred(netns))?;
            }
            TapDatapath::None => {}
        }
        remove_tap(handle, netns, tap).await
    }
}

/// `pair` with the source guard `guard` (when the datapath has one) of its pod device's
/// MAC and addresses.
fn guarded_pair(
    pair: Pair,
    iface: &Interface,
    guard: &std::result::Result<GuardSettings, String>,
) -> Pair {
    match (guard, iface.mac) {
        (Ok(settings), Some(mac)) => {
            let addresses: Vec<_> = iface.addresses.iter().map(|a| a.address).collect();
            pair.guarded(mac, &addresses, settings)
        }
        _ => pair,
    }
}

/// The datapath that was set up.
pub(crate) struct Connected {
    pub backend: TcBackend,
    /// `tcx`, `cls_bpf` or `mirred`.
    pub datapath: DatapathKind,
    pub pin_dir: Option<PathBuf>,
}

/// Connects `pairs` with `backend`; every change is registered in `undo` first. The eBPF
/// datapath of a new sandbox is hooked with `ebpf_attach` (else by the kernel) and loaded
/// from `object` (else the built-in object), or is `preload` when that is what it needs
/// (see [`crate::datapath::preload`]); a sandbox that exists keeps its own.
pub(crate) async fn connect_pairs(
    handle: &rtnetlink::Handle,
    netns: &Netns,
    backend: TcBackend,
    (ebpf_attach, object): (Option<AttachMode>, Option<&EbpfObject>),
    pairs: &[Pair],
    preload: Option<Preload>,
    undo: &mut Undo,
) -> Result<Connected> {
    match backend {
        TcBackend::Ebpf => {
            let existed = pins::sandbox_dir(netns.cookie).exists();
            let ebpf_err = Error::ebpf(netns);
            let capacity =
                crate::datapath::capacity::for_new_sandbox(pairs.iter().map(|p| p.index).max());
            let new_mode = ebpf_attach.unwrap_or_else(AttachMode::auto);
            // A preload that does not fit is dropped here: joined, its directory removed.
            let preload = preload.filter(|p| !existed && p.fits(new_mode, object, capacity));
            let (dir, mut datapath) = match preload {
                Some(preload) => {
                    let dir = pins::sandbox_dir(netns.cookie);
                    pins::create_private_dirs(&[std::path::Path::new(pins::PIN_ROOT)])?;
                    undo.pin_dir = Some(dir.clone());
                    let datapath = preload.install(&dir).map_err(ebpf_err)?;
                    crash_point("pin-dir-created");
                    (dir, datapath)
                }
                None => {
                    let dir = pins::create_sandbox_dir(netns.cookie)?;
                    crash_point("pin-dir-created");
                    let mode = match existed {
                        // Later pairs join the sandbox as it was made.
                        true => ebpf::recorded_mode(&dir).map_err(ebpf_err)?,
                        false => {
                            undo.pin_dir = Some(dir.clone());
                            new_mode
                        }
                    };
                    let datapath =
                        EbpfDatapath::load(&dir, mode, object, capacity).map_err(ebpf_err)?;
                    (dir, datapath)
                }
            };
            crash_point("program-loaded");
            if !existed {
                datapath.record_sandbox(netns).map_err(ebpf_err)?;
            }
            datapath.anchor_netns().map_err(ebpf_err)?;
            for p in pairs {
                if existed {
                    undo.ebpf_pairs
                        .push((dir.clone(), p.a.name.clone(), p.b.name.clone()));
                }
                let started = std::time::Instant::now();
                datapath
                    .connect(
                        handle,
                        p.index,
                        &p.a,
                        &p.b,
                        (p.a_to_b, p.b_to_a),
                        p.guard.as_ref(),
                    )
                    .await
                    .map_err(ebpf_err)?;
                tracing::debug!(elapsed = ?started.elapsed(), index = p.index, "{} <-> {} connected (eBPF)", p.a.name, p.b.name);
            }
            Ok(Connected {
                backend,
                datapath: datapath.mode().into(),
                pin_dir: Some(dir),
            })
        }
        TcBackend::Mirred => {
            for p in pairs {
                undo.mirred.push((p.a.clone(), p.b.clone()));
                mirred::connect(handle, &p.a, &p.b)
                    .await
                    .map_err(Error::mirred(netns))?;
                crash_point("mirred-connected");
            }
            Ok(Connected {
                backend,
                datapath: DatapathKind::Mirred,
                pin_dir: None,
            })
        }
    }
}
