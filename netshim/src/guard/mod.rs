//! The source guard (issue 11): what the VM behind an endpoint's tap may send.
//!
//! The checks run in the eBPF datapath (`netshim-ebpf/src/guard.rs`) for a tap whose
//! `peers` entry has `PEER_GUARD`. This module is their userspace:
//! - [`mode`]: `enforce` / `log` / `off`;
//! - [`settings`]: what a user configures (mode, DHCP, allowed CIDRs and ethertypes), and
//!   whether a sandbox's datapath can have a guard at all;
//! - [`config_map`]: the `guard` map value and the `guard_v4`/`guard_v6` trie entries of
//!   one endpoint, built from its guest MAC, its addresses and the settings;
//! - [`maps`]: writing, removing and reading back one endpoint's guard in the pinned maps;
//! - [`report`]: the guard as reports show it (`attach`, `status`, `netshim guard`);
//! - [`events`]: the datapath's refusal records (`guard_last`, or an older datapath's
//!   `guard_events` ring) as log events.

pub mod config_map;
pub mod events;
pub mod maps;
pub mod mode;
pub mod report;
pub mod settings;

pub use config_map::{GuardEntry, TRIE_ADDRESS, TRIE_ALLOWED};
pub use maps::GuardMapError;
pub use mode::GuardMode;
pub use report::GuardReport;
pub use settings::GuardSettings;
