//! The ingress qdisc kata's filters hang off (handle `ffff:`), and kata's EBUSY retry.

use std::{future::Future, time::Duration};

use futures::TryStreamExt;
use nix::errno::Errno;
use rtnetlink::{
    packet_route::tc::{TcAttribute, TcHandle, TcMessage},
    Handle,
};

use super::{Dev, IngressQdisc, MirredError, INGRESS_HANDLE, QDISC_ADD_TRIES, QDISC_BACKOFF_STEP};
use crate::netlink::{self, errno};

/// Whether dev has an ingress qdisc (handle ffff:) — and whether it's a clsact (which shares
/// ffff:) — for status/conflicts. A device that does not exist has [`IngressQdisc::None`].
pub async fn ingress_qdisc(handle: &Handle, dev: &Dev) -> Result<IngressQdisc, MirredError> {
    let mut stream = handle.qdisc().get().index(dev.ifindex as i32).execute();
    let mut found = IngressQdisc::None;
    // Read the dump to its end even after a hit, so no reply is left behind.
    while let Some(msg) = stream
        .try_next()
        .await
        .map_err(|source| MirredError::GetQdisc {
            dev: dev.name.clone(),
            ifindex: dev.ifindex,
            source,
        })?
    {
        if let Some(kind) = ingress_kind_of(&msg, dev.ifindex) {
            found = kind;
        }
    }
    Ok(found)
}

/// Adds the ingress qdisc of `dev` unless one is there. `Ok(true)` if this call created it.
pub(super) async fn ensure_ingress(handle: &Handle, dev: &Dev) -> Result<bool, MirredError> {
    let added = add_with_busy_retry(
        || handle.qdisc().add(dev.ifindex as i32).ingress().execute(),
        tokio::time::sleep,
    )
    .await;
    match added {
        Ok(()) => Ok(true),
        Err(AddFailure::Busy { tries }) => Err(MirredError::QdiscBusy {
            dev: dev.name.clone(),
            ifindex: dev.ifindex,
            tries,
        }),
        Err(AddFailure::Other(source)) => {
            if errno(&source) == Some(Errno::EEXIST) {
                match ingress_qdisc(handle, dev).await? {
                    IngressQdisc::Ingress => return Ok(false),
                    IngressQdisc::Clsact => {
                        return Err(MirredError::ClsactPresent {
                            dev: dev.name.clone(),
                            ifindex: dev.ifindex,
                        })
                    }
                    IngressQdisc::None => {}
                }
            }
            Err(MirredError::AddQdisc {
                dev: dev.name.clone(),
                ifindex: dev.ifindex,
                source,
            })
        }
    }
}

/// Removes `dev`'s ingress qdisc if it has one (not a clsact).
pub(super) async fn remove_ingress(handle: &Handle, dev: &Dev) -> Result<(), MirredError> {
    if ingress_qdisc(handle, dev).await? != IngressQdisc::Ingress {
        return Ok(());
    }
    match del_ingress(handle, dev).await {
        Ok(()) => Ok(()),
        // Gone in between (device deleted, or another teardown won the race).
        Err(e)
            if netlink::is_hook_gone(&e)
                && ingress_qdisc(handle, dev).await? != IngressQdisc::Ingress =>
        {
            Ok(())
        }
        Err(source) => Err(MirredError::DelQdisc {
            dev: dev.name.clone(),
            ifindex: dev.ifindex,
            source,
        }),
    }
}

pub(super) async fn del_ingress(handle: &Handle, dev: &Dev) -> Result<(), rtnetlink::Error> {
    let mut req = handle.qdisc().del(dev.ifindex as i32);
    let msg = req.message_mut();
    msg.header.parent = TcHandle::INGRESS;
    msg.header.handle = INGRESS_HANDLE.into();
    // With the kind, the kernel refuses (EINVAL) rather than deletes a clsact that replaced our
    // ingress qdisc since we looked.
    msg.attributes
        .push(TcAttribute::Kind("ingress".to_string()));
    req.execute().await
}

/// The kind of the qdisc at `ffff:` that `msg` (from an RTM_GETQDISC dump) describes, if it is
/// `ifindex`'s ingress or clsact qdisc.
pub(super) fn ingress_kind_of(msg: &TcMessage, ifindex: u32) -> Option<IngressQdisc> {
    if msg.header.index != ifindex as i32 {
        return None;
    }
    msg.attributes.iter().find_map(|a| match a {
        TcAttribute::Kind(k) if k == "ingress" => Some(IngressQdisc::Ingress),
        TcAttribute::Kind(k) if k == "clsact" => Some(IngressQdisc::Clsact),
        _ => None,
    })
}

pub(super) enum AddFailure {
    Busy { tries: u32 },
    Other(rtnetlink::Error),
}

/// The sleep after failed attempt `attempt` (1-based) before the next one: 10 ms × attempt,
/// `None` after the last attempt.
pub(super) fn busy_backoff(attempt: u32) -> Option<Duration> {
    (attempt < QDISC_ADD_TRIES).then(|| QDISC_BACKOFF_STEP * attempt)
}

/// Runs `op` until it does not fail with `EBUSY`, at most [`QDISC_ADD_TRIES`] times, sleeping
/// [`busy_backoff`] in between.
pub(super) async fn add_with_busy_retry<Op, OpFut, Sleep, SleepFut>(
    mut op: Op,
    mut sleep: Sleep,
) -> Result<(), AddFailure>
where
    Op: FnMut() -> OpFut,
    OpFut: Future<Output = Result<(), rtnetlink::Error>>,
    Sleep: FnMut(Duration) -> SleepFut,
    SleepFut: Future<Output = ()>,
{
    let mut attempt = 1;
    loop {
        match op().await {
            Ok(()) => return Ok(()),
            Err(e) if errno(&e) == Some(Errno::EBUSY) => match busy_backoff(attempt) {
                Some(delay) => {
                    sleep(delay).await;
                    attempt += 1;
                }
                None => return Err(AddFailure::Busy { tries: attempt }),
            },
            Err(e) => return Err(AddFailure::Other(e)),
        }
    }
}
