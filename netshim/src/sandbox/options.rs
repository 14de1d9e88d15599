//! What `attach` (and with it `watch` and the CNI plugin) is asked to do, and kata's rules
//! for which options and namespaces go together.

use std::collections::BTreeMap;

use crate::{
    config::TapId,
    datapath::{AttachMode, FastPath, TcBackend},
    endpoint::SystemProbe,
    guard::GuardSettings,
    model::{InternetworkingModel, PlugOptions},
    netns::Netns,
    tap, Error, Result,
};

/// What `attach` does.
#[derive(Debug, Clone, Default)]
pub struct AttachOptions {
    pub model: InternetworkingModel,
    pub backend: TcBackend,
    /// Queues per tap (and macvtap): 0 or 1 = single queue, more = IFF_MULTI_QUEUE.
    pub queues: u32,
    /// TUNSETOWNER / TUNSETGROUP of the taps (the VMM's user).
    pub tap_owner: Option<u32>,
    pub tap_group: Option<u32>,
    /// txqueuelen of the taps; the kernel default (1000) when `None`.
    pub txqueuelen: Option<u32>,
    /// How to hook the eBPF classifier; `None` = `--ebpf-attach auto` ([`AttachMode::auto`]).
    pub ebpf_attach: Option<AttachMode>,
    /// The eBPF object a new sandbox's datapath is loaded from (`--object`); `None` = the
    /// one built into this binary. A sandbox that has a pinned program keeps it.
    pub ebpf_object: Option<crate::datapath::ebpf::EbpfObject>,
    /// Whether the eBPF datapath may use `bpf_redirect_peer` (VM → pod veth's peer).
    pub fast_path: FastPath,
    /// Where vhost-user sockets are looked for.
    pub probe: SystemProbe,
    /// List interfaces kata would refuse as skipped instead of failing.
    pub skip_unsupported: bool,
    /// kata's `disable_new_netns`: the netns is the caller's own, not one made for the
    /// sandbox; only valid with the `none` model.
    pub disable_new_netns: bool,
    /// Tap names in place of `tap<N>_kata`: pod device name → tap name (the CNI key
    /// `tap_name`, for CNI_IFNAME). tcfilter and none models only.
    pub tap_names: BTreeMap<String, String>,
    /// A pod device that must end up with a tap or macvtap (CNI_IFNAME): attach refuses,
    /// before it changes anything, when it is absent, skipped (`lo`, ...) or an endpoint the
    /// VMM takes as it is (physical, vhost-user); an attached netns then stays as it is.
    pub needs_tap: Option<String>,
    /// The source guard of every endpoint's tap (eBPF backend).
    pub guard: GuardSettings,
    /// Whether `guard.mode` was asked for (flag, TOML or CNI key) rather than defaulted:
    /// enforce or log asked for where there is no eBPF datapath is an error, the default
    /// there is off.
    pub guard_explicit: bool,
    /// Rate limits of every endpoint (kata's rx/tx limiter), merged from the sources.
    pub limits: crate::limit::LimitRequest,
}

impl AttachOptions {
    /// kata's configuration rule: with `disable_new_netns` the runtime works in the caller's
    /// netns, whose interfaces must not be redirected into a VM, so only `none` applies.
    pub fn validate(&self) -> Result<()> {
        if self.disable_new_netns && self.model != InternetworkingModel::None {
            return Err(Error::InvalidOptions(format!(
                "config disable_new_netns only works with 'none' internetworking model, not \
                 '{}': without a netns of its own the sandbox shares the caller's interfaces, \
                 and connecting them to a VM would take them away from the caller",
                self.model
            )));
        }
        for (id, value) in [(TapId::Uid, self.tap_owner), (TapId::Gid, self.tap_group)] {
            if let Some(v) = value {
                let what = if id == TapId::Uid { "owner" } else { "group" };
                crate::config::parse_tap_id(&v.to_string(), id)
                    .map_err(|e| Error::InvalidOptions(format!("tap {what} {e}")))?;
            }
        }
        if !self.tap_names.is_empty() && self.model == InternetworkingModel::MacVtap {
            return Err(Error::InvalidOptions(
                "tap names apply to the taps of the tcfilter and none models, not to the \
                 macvtap model's macvtaps"
                    .into(),
            ));
        }
        self.resolved_guard().map(drop)?;
        self.limits
            .limits()
            .map_err(|e| Error::InvalidOptions(format!("rate limit: {e}")))?;
        let mut seen = std::collections::BTreeSet::new();
        for (pod, tap) in &self.tap_names {
            tap::name::validate_custom(tap)
                .map_err(|e| Error::InvalidOptions(format!("tap name for {pod}: {e}")))?;
            if !seen.insert(tap) {
                return Err(Error::InvalidOptions(format!(
                    "tap name {tap} is given for more than one pod device"
                )));
            }
        }
        Ok(())
    }

    /// kata's rules for the netns itself: the caller's own netns named by path
    /// (`/proc/self/ns/net`, ...) is a sandbox without a netns of its own, so it needs
    /// `disable_new_netns` (and with it the `none` model); the host's netns (PID 1's, see
    /// [`crate::host::host_pid`], however it is named: by cookie) is never handed to a VM by any other model.
    pub fn check_netns(&self, netns: &Netns) -> Result<()> {
        let host = crate::host::host_pid()
            .ok()
            .and_then(|pid| Netns::resolve(&format!("/proc/{pid}/ns/net")).ok())
            .map(|n| n.cookie);
        let own = netns.is_callers_own_by_path();
        match netns_refusal(self, own, netns.cookie, host) {
            Some(why) => Err(Error::InvalidOptions(format!("netns {netns}: {why}"))),
            None => Ok(()),
        }
    }

    /// The guard the endpoints get: the settings on the eBPF datapath, else why there is
    /// none (see [`crate::model::guard_policy::resolve`]).
    pub(crate) fn resolved_guard(&self) -> Result<std::result::Result<GuardSettings, String>> {
        let settings = self
            .guard
            .clone()
            .validate()
            .map_err(Error::GuardSettings)?;
        let model = self.model;
        Ok(crate::model::guard_policy::resolve(
            &settings,
            self.guard_explicit,
            model,
            self.backend,
        )?)
    }

    /// What the models take of these options (the guard resolved, see
    /// [`Self::resolved_guard`]).
    pub(crate) fn plug_options(&self) -> Result<PlugOptions> {
        Ok(PlugOptions {
            backend: self.backend,
            ebpf_attach: self.ebpf_attach,
            ebpf_object: self.ebpf_object.clone(),
            fast_path: self.fast_path,
            queues: self.queues,
            tap_owner: self.tap_owner,
            tap_group: self.tap_group,
            txqueuelen: self.txqueuelen,
            tap_names: self.tap_names.clone(),
            guard: self.resolved_guard()?,
        })
    }
}

/// Why `options` may not attach a netns with cookie `cookie` (`own_by_path`: it was named
/// as the caller's own, `/proc/self/…`; `host_cookie`: PID 1's netns, when known).
fn netns_refusal(
    options: &AttachOptions,
    own_by_path: bool,
    cookie: u64,
    host_cookie: Option<u64>,
) -> Option<String> {
    if own_by_path && !options.disable_new_netns {
        return Some(
            "this is netshim's own network namespace (the caller's), named by path: kata's \
             rule is that a sandbox without a netns of its own (disable_new_netns) only \
             works with the 'none' internetworking model, since connecting the caller's \
             interfaces to a VM would take them away from it; name the sandbox's netns, or \
             pass --disable-new-netns --model none"
                .into(),
        );
    }
    if options.model != InternetworkingModel::None && host_cookie == Some(cookie) {
        return Some(format!(
            "this is the host's network namespace (cookie {cookie}, PID 1's): the \
             '{}' model would hand the host's interfaces to a VM and cut the host off; \
             only --model none may attach here",
            options.model
        ));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_and_host_netns_are_refused_as_kata_would() {
        let opts = |model, disable_new_netns| AttachOptions {
            model,
            disable_new_netns,
            ..AttachOptions::default()
        };
        let (tcfilter, none) = (InternetworkingModel::TcFilter, InternetworkingModel::None);
        let host = Some(4026531840);
        // A pod netns of its own: fine.
        assert_eq!(netns_refusal(&opts(tcfilter, false), false, 7, host), None);
        // The caller's own netns by path: only with disable_new_netns (model none).
        let own = netns_refusal(&opts(tcfilter, false), true, 7, host).unwrap();
        assert!(own.contains("disable_new_netns"), "{own}");
        assert!(netns_refusal(&opts(none, false), true, 7, host).is_some());
        assert_eq!(netns_refusal(&opts(none, true), true, 7, host), None);
        // The host's netns, however it is named: never by a model other than none.
        for model in [tcfilter, InternetworkingModel::MacVtap] {
            for own in [false, true] {
                let why = netns_refusal(&opts(model, own), own, 4026531840, host).unwrap();
                assert!(why.contains("host's network namespace"), "{why}");
            }
        }
        assert_eq!(
            netns_refusal(&opts(none, false), false, 4026531840, host),
            None
        );
        assert_eq!(
            netns_refusal(&opts(none, true), true, 4026531840, host),
            None
        );
        // PID 1's cookie unknown: only the by-path rule applies.
        assert_eq!(
            netns_refusal(&opts(tcfilter, false), false, 4026531840, None),
            None
        );
    }
}
