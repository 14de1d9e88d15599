//! netshim: connects the pod-side interfaces of a sandbox network namespace to taps for a
//! microVM, the way kata-containers' tcfilter model does, with a TC eBPF datapath (or kata's
//! u32 + mirred as a baseline) and per-endpoint counters pinned in bpffs.
//!
//! Module map:
//! - [`netns`]: resolving and entering network namespaces (one thread per netns operation).
//! - [`interfaces`]: the links and addresses of a netns, over rtnetlink.
//! - [`netlink`]: the one netlink layer: dump, request/ACK, errno and is-gone tests.
//! - [`endpoint`]: classifying them in kata's `createEndpoint` taxonomy.
//! - [`model`]: kata's internetworking models, and the macvtap model itself.
//! - [`tap`]: creating the persistent taps handed to the VMM (its ioctls), and kata's tap names.
//! - [`datapath`]: the datapaths that connect an endpoint to its tap (eBPF, mirred).
//! - [`limit`]: per-endpoint rate limits (kata's rx/tx limiter keys), shaped by HTB.
//! - [`guard`]: the source guard of the VM's traffic (settings, its maps, reports).
//! - [`host`]: what a command needs of the host: its mount namespace (bpffs, /run/netshim)
//!   and privileges.
//! - [`pins`], [`state`]: what outlives the netshim process (bpffs pins, /run/netshim).
//! - [`state::lock`]: one operation per sandbox at a time (a flock that dies with its holder).
//! - [`crash`]: named crash points for crash-safety tests (debug builds).
//! - [`guest_info`]: routes and neighbours the guest agent needs.
//! - [`stats`]: reading per-endpoint counters back.
//! - `ring_drain`: draining a ring buffer whenever its fd is readable (under [`ebpf_log`]
//!   and [`guard::events`]).
//! - [`ebpf_log`]: forwarding the datapath's aya-log records into `tracing`, and (with
//!   [`guard::events`]) the source guard's refusal records.
//! - [`metrics`]: rates, Prometheus exposition and the scrape endpoint over those counters.
//! - [`config`]: the kata-style TOML configuration file.
//! - [`cni`]: the `netshim` binary as a chained CNI plugin (ADD/DEL/CHECK/STATUS/GC/VERSION),
//!   and its installer into a node's CNI configuration ([`cni::install`]).
//! - [`agent`]: the node daemon (keeps netshim chained, metrics, gc, rollout upgrades).
//! - [`sandbox`]: scan / attach / detach / status / stats / upgrade / watch of a whole netns,
//!   and gc.
//! - [`schema`]: the published JSON Schemas of the files and reports netshim writes.

pub mod agent;
pub mod cni;
pub mod config;
pub mod crash;
pub mod datapath;
pub mod ebpf_log;
pub mod endpoint;
pub mod error;
pub mod guard;
pub mod guest_info;
pub mod host;
pub mod interfaces;
pub mod limit;
pub mod metrics;
pub mod model;
pub mod netlink;
pub mod netns;
pub mod pins;
mod ring_drain;
pub mod sandbox;
pub mod schema;
pub mod state;
pub mod stats;
pub mod tap;

pub use error::{Error, Result};

/// The eBPF object built from `netshim-ebpf` by build.rs.
pub static EBPF_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/netshim"));
