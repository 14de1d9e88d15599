//! Per-endpoint rate limits: kata's `rx_rate_limiter_max_rate` / `tx_rate_limiter_max_rate`
//! (bits per second, rx = into the VM), with an optional burst, shaped by an HTB tree on the
//! device each direction leaves through.
//!
//! - [`rate`]: rates and bursts as text, and their bounds.
//! - [`request`]: what the sources (flags, TOML, CNI keys) ask for, merged and validated.
//! - [`htb`]: the HTB tree through netlink: install, change in place, remove, read back.
//! - [`ifb`]: the IFB device of a direction no qdisc of netshim's is on (kata's `ifb0`).
//! - [`placement`]: which device shapes which direction, per model and datapath.
//! - [`apply`]: making an endpoint's limits what was asked (attach, `netshim limit`).
//!
//! Why HTB and not EDT: EDT (a departure time in `skb->tstamp`, honoured by `sch_fq`) needs
//! `fq` on the device; a kernel without `CONFIG_NET_SCH_FQ` (like the one netshim is
//! developed on) cannot enforce it, and a token-bucket policer in the program dropped whole
//! GSO frames (12k retransmits per 5 s at 1 Gbit/s, TCP timeouts). HTB shapes in every
//! kernel that has it; netshim's profile sizes its burst for GSO frames (see
//! [`htb::HtbParams::for_profile`]). docs/rate-limits.md has the measurements.

pub mod apply;
pub mod htb;
pub mod ifb;
pub mod placement;
pub mod rate;
pub mod request;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

pub use request::LimitRequest;

/// One direction's limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct RateLimit {
    /// Bits per second of Ethernet frames (headers included, as tc counts).
    pub rate_bps: u64,
    /// Bytes the direction may send at once above the rate; `None`: the profile's default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub burst_bytes: Option<u64>,
}

/// An endpoint's limits; `None` = unlimited in that direction.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Limits {
    /// Into the VM (kata's rx).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rx: Option<RateLimit>,
    /// Out of the VM (kata's tx).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tx: Option<RateLimit>,
}

impl Limits {
    pub fn is_empty(&self) -> bool {
        self.rx.is_none() && self.tx.is_none()
    }

    pub fn get(&self, direction: LimitDirection) -> Option<RateLimit> {
        match direction {
            LimitDirection::Rx => self.rx,
            LimitDirection::Tx => self.tx,
        }
    }
}

/// A direction as kata names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum LimitDirection {
    /// Into the VM.
    Rx,
    /// Out of the VM.
    Tx,
}

impl LimitDirection {
    pub const ALL: [LimitDirection; 2] = [LimitDirection::Rx, LimitDirection::Tx];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Rx => "rx",
            Self::Tx => "tx",
        }
    }
}

/// The parameters the HTB classes get (`--limit-profile`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum HtbProfile {
    /// netshim's: a burst sized for GSO frames (see [`htb::HtbParams::for_profile`]).
    #[default]
    Netshim,
    /// Exactly what kata's `addHTBQdisc` sets up (for comparison and for operators who want
    /// kata's behaviour as it is).
    Kata,
}

impl HtbProfile {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Netshim => "netshim",
            Self::Kata => "kata",
        }
    }
}

impl std::str::FromStr for HtbProfile {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "netshim" => Ok(Self::Netshim),
            "kata" => Ok(Self::Kata),
            other => Err(format!(
                "unknown limit profile {other:?} (known: netshim, kata)"
            )),
        }
    }
}

/// One direction's shaper as it was made: what `attach` and `limit` record and report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Shaper {
    pub rate_bps: u64,
    /// The burst in effect (the given one, else the profile's at this rate).
    pub burst_bytes: u64,
    /// The burst the operator gave (it stays through later rate changes); `None`: the
    /// profile's default, computed anew for each rate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub burst_given: Option<u64>,
    pub profile: HtbProfile,
    /// The device whose root qdisc shapes this direction.
    pub device: String,
    pub ifindex: u32,
    /// tx on the eBPF datapath: the tap's redirect was switched from `bpf_redirect_peer`
    /// (which skips the pod device's qdisc) to `bpf_redirect` for the limit; removing the
    /// limit switches it back.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub displaced_peer: bool,
    /// `device` is an IFB fed from this device's ingress (kata's mirred redirect).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fed_from: Option<FedFrom>,
}

/// The device whose ingress feeds a shaper's IFB.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct FedFrom {
    pub device: String,
    pub ifindex: u32,
}

/// An endpoint's shapers.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct EndpointShapers {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rx: Option<Shaper>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tx: Option<Shaper>,
}

impl EndpointShapers {
    pub fn is_empty(&self) -> bool {
        self.rx.is_none() && self.tx.is_none()
    }

    pub fn get(&self, direction: LimitDirection) -> Option<&Shaper> {
        match direction {
            LimitDirection::Rx => self.rx.as_ref(),
            LimitDirection::Tx => self.tx.as_ref(),
        }
    }

    fn slot(&mut self, direction: LimitDirection) -> &mut Option<Shaper> {
        match direction {
            LimitDirection::Rx => &mut self.rx,
            LimitDirection::Tx => &mut self.tx,
        }
    }

    /// The limits these shapers stand for.
    pub fn limits(&self) -> Limits {
        let of = |s: &Option<Shaper>| {
            s.as_ref().map(|s| RateLimit {
                rate_bps: s.rate_bps,
                burst_bytes: s.burst_given,
            })
        };
        Limits {
            rx: of(&self.rx),
            tx: of(&self.tx),
        }
    }
}

/// What a shaper's qdisc counted since it was made (the kernel's qdisc statistics).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct ShaperCounters {
    /// Frames and bytes that left the shaper.
    pub sent_packets: u64,
    pub sent_bytes: u64,
    /// Times the shaper held frames back because the direction was over its rate (HTB's
    /// overlimits).
    pub throttled: u64,
    /// Frames dropped because the shaper's queue was full.
    pub dropped: u64,
    /// What waits in the queue now.
    pub backlog_packets: u64,
    pub backlog_bytes: u64,
}
