//! Test support for netshim (not product code; may shell out to `ip`/`tc`).
//!
//! It plays the VMM's userspace tap backend for demos, integration tests and benchmarks:
//! - [`netns_fixture`]: throw-away network namespaces ([`TestNetns`]), veth pairs, process
//!   guards, and [`on_netns_thread`] to run code inside a netns.
//! - [`relay`]: the two-thread frame relay between two tap queues (virtio-net headers and GSO
//!   frames cross whole), used by the `vm-standin` binary.
//! - [`vmm_tap`]: the VMM's side of a tap (queues, offloads, vnet header size), with
//!   nix's ioctls.
//! - [`tap_reader`]: read/inject single frames on a tap; an Ethernet/IPv4/UDP frame builder.
//! - [`qemu`]: a real VMM: QEMU (TCG) booting the host kernel with a busybox initramfs on a
//!   tap, configured from netshim's attach JSON.
//! - [`traffic`]: a quick two-way forwarding probe of an attached pod.
//! - [`vnet`]: frames with a virtio-net header as a VM writes them (GSO, checksum offload,
//!   and the lies a guest can tell in them).
//! - [`frames`]: frames a guest may (or may not) send: ARP, IPv4, IPv6/ICMPv6 ND/RA, DHCP,
//!   VLAN/QinQ, LLDP, STP, PAUSE, with correct checksums (the source guard's tests).
//! - [`sniffer`]: an `AF_PACKET` capture of what a device receives.
//! - [`leaks`]: what netshim may leave in a netns (links, qdiscs, filters, TCX links, pins),
//!   captured so that a test can compare before and after.
//! - [`netns_json`]: a netns as `ip -j`/`tc -j` report it, for before/after comparisons.
//! - [`cni_runtime`]: conflists driven as libcni drives them, with the reference plugins.
//! - [`podman_env`]: a podman of its own (storage, containers.conf, CNI dirs) in a temp dir.
//! - [`watch`]: a running `netshim watch --json` and its events.
//! - [`vmconf`]: firecracker-go-sdk's reading of a CNI result, to test netshim against it.

pub mod cni_runtime;
pub mod frames;
pub mod leaks;
pub mod netns_fixture;
pub mod netns_json;
pub mod netshim_cli;
pub mod podman_env;
pub mod qemu;
pub mod relay;
pub mod sniffer;
pub mod standin;
pub mod tap_reader;
pub mod traffic;
pub mod vmconf;
pub mod vmm_tap;
pub mod vnet;
pub mod watch;

pub use netns_fixture::{
    client_shim_server, is_root, on_netns_thread, skip_unless_root, try_on_netns_thread,
    two_veths_from, veth_pair, ChildGuard, TestNetns,
};
pub use relay::{Relay, RelaySummary};
pub use tap_reader::{TapQueue, UdpFrame};
