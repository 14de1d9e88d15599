//! The IFB device a direction is shaped on when no qdisc of netshim's is on its path (the
//! none model's tx, the macvtap model's rx), fed the way kata feeds its `ifb0`: kata's
//! ingress qdisc and u32 match-all `mirred egress redirect` (see
//! [`crate::datapath::mirred`]) on the device the frames arrive on. The IFB gives each frame
//! back to that device's receive path after its qdisc (the HTB tree), past the ingress hook.
//!
//! kata names its device `ifb0`, one per sandbox; netshim names one per endpoint,
//! `ifb<N>_kata` for endpoint N, so that several endpoints can be limited.

use rtnetlink::{
    packet_route::link::{InfoKind, LinkMessage},
    Handle, LinkIfb, LinkUnspec,
};

use crate::{datapath::Dev, netlink};

/// The IFB device of endpoint `index`.
pub fn name(index: u32) -> String {
    format!("ifb{index}_kata")
}

/// Whether `name` is one of netshim's IFB names.
pub fn is_name(name: &str) -> bool {
    name.strip_prefix("ifb")
        .and_then(|rest| rest.strip_suffix("_kata"))
        .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
}

/// Why an IFB could not be made or found.
#[derive(Debug, thiserror::Error)]
pub enum IfbError {
    #[error("{op} {name}: {source}")]
    Netlink {
        op: &'static str,
        name: String,
        source: rtnetlink::Error,
    },
    #[error(
        "{name} exists and is not an IFB device (kind {kind}): netshim names endpoint's IFB so; \
         rename or remove it"
    )]
    NameTaken { name: String, kind: String },
}

/// The ifindex and kind of the link named `name`, if there is one.
async fn find(handle: &Handle, name: &str) -> Result<Option<(u32, Option<InfoKind>)>, IfbError> {
    use futures::TryStreamExt;
    let mut links = handle.link().get().match_name(name.to_string()).execute();
    match links.try_next().await {
        Ok(Some(m)) => Ok(Some((m.header.index, kind_of(&m)))),
        Ok(None) => Ok(None),
        Err(e) if netlink::is_gone(&e) => Ok(None),
        Err(source) => Err(IfbError::Netlink {
            op: "RTM_GETLINK",
            name: name.to_owned(),
            source,
        }),
    }
}

fn kind_of(m: &LinkMessage) -> Option<InfoKind> {
    use rtnetlink::packet_route::link::{LinkAttribute, LinkInfo};
    m.attributes.iter().find_map(|a| match a {
        LinkAttribute::LinkInfo(infos) => infos.iter().find_map(|i| match i {
            LinkInfo::Kind(k) => Some(k.clone()),
            _ => None,
        }),
        _ => None,
    })
}

/// The IFB `name`, made (and up) when it is not there, and whether it was made here; a
/// device of another kind with that name is refused.
pub async fn ensure(handle: &Handle, name: &str) -> Result<(Dev, bool), IfbError> {
    let fail = |op| {
        let name = name.to_owned();
        move |source| IfbError::Netlink { op, name, source }
    };
    let (ifindex, made) = match find(handle, name).await? {
        Some((ifindex, Some(InfoKind::Ifb))) => (ifindex, false),
        Some((_, kind)) => {
            return Err(IfbError::NameTaken {
                name: name.to_owned(),
                kind: kind.map_or_else(|| "unknown".into(), |k| format!("{k:?}").to_lowercase()),
            })
        }
        None => {
            handle
                .link()
                .add(LinkIfb::new(name).build())
                .execute()
                .await
                .map_err(fail("RTM_NEWLINK ifb"))?;
            match find(handle, name).await? {
                Some((ifindex, _)) => (ifindex, true),
                None => {
                    return Err(IfbError::Netlink {
                        op: "RTM_GETLINK",
                        name: name.to_owned(),
                        source: rtnetlink::Error::RequestFailed,
                    })
                }
            }
        }
    };
    handle
        .link()
        .set(LinkUnspec::new_with_index(ifindex).up().build())
        .execute()
        .await
        .map_err(fail("RTM_NEWLINK up"))?;
    Ok((
        Dev {
            name: name.to_owned(),
            ifindex,
        },
        made,
    ))
}

/// Deletes the IFB `dev` (its qdiscs go with it); gone already is fine.
pub async fn delete(handle: &Handle, dev: &Dev) -> Result<(), IfbError> {
    crate::model::undo::delete_link(handle, dev)
        .await
        .map_err(|source| IfbError::Netlink {
            op: "RTM_DELLINK",
            name: dev.name.clone(),
            source,
        })
}

/// netshim's IFB devices in the netns (by name and kind), for teardown.
pub async fn list(handle: &Handle) -> Result<Vec<Dev>, IfbError> {
    use futures::TryStreamExt;
    let mut out = Vec::new();
    let mut links = handle.link().get().execute();
    loop {
        match links.try_next().await {
            Ok(Some(m)) => {
                let name = m.attributes.iter().find_map(|a| match a {
                    rtnetlink::packet_route::link::LinkAttribute::IfName(n) => Some(n.clone()),
                    _ => None,
                });
                if let Some(name) = name {
                    if is_name(&name) && kind_of(&m) == Some(InfoKind::Ifb) {
                        out.push(Dev {
                            name,
                            ifindex: m.header.index,
                        });
                    }
                }
            }
            Ok(None) => return Ok(out),
            Err(source) => {
                return Err(IfbError::Netlink {
                    op: "RTM_GETLINK dump",
                    name: "ifb*_kata".into(),
                    source,
                })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_per_endpoint() {
        assert_eq!(name(0), "ifb0_kata");
        assert!(is_name("ifb12_kata"));
        assert!(!is_name("ifb0") && !is_name("ifb_kata") && !is_name("ifbx_kata"));
        assert!(name(99999).len() <= 15, "IFNAMSIZ");
    }
}
