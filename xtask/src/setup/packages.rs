//! The Debian packages each task needs, by who runs them. One list per [`Purpose`]; a package
//! two of them need is in both. Add a package to the list of what runs it (one line).

/// Who needs a package.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Purpose {
    /// `cargo xtask demo`.
    Demo,
    /// The test suite (`cargo xtask test`, `.ci/run`).
    Test,
    /// `cargo xtask bench`.
    Bench,
}

impl Purpose {
    pub const ALL: [Purpose; 3] = [Purpose::Demo, Purpose::Test, Purpose::Bench];

    /// The packages this purpose needs.
    pub fn packages(self) -> &'static [AptPackage] {
        match self {
            Purpose::Demo => DEMO_PACKAGES,
            Purpose::Test => TEST_PACKAGES,
            Purpose::Bench => BENCH_PACKAGES,
        }
    }
}

/// A Debian package and a file whose presence means it is installed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AptPackage {
    pub name: &'static str,
    /// An executable name (looked up on PATH and the sbin dirs) or an absolute path.
    pub probe: &'static str,
}

/// `AptPackage { name, probe }`, on one line.
const fn pkg(name: &'static str, probe: &'static str) -> AptPackage {
    AptPackage { name, probe }
}

/// What `cargo xtask demo` runs besides its own binaries (xtask/src/demo.rs, topology.rs):
/// `ip` and `ss`, `ping`, `iperf3`.
pub const DEMO_PACKAGES: &[AptPackage] = &[
    pkg("iproute2", "ip"),
    pkg("iputils-ping", "ping"),
    pkg("iperf3", "iperf3"),
];

/// What the test suite runs (tests/): the tools, the real-VMM test's QEMU and static busybox
/// (its guest kernel is unpacked apart, see super::guest_kernel), the CNI reference plugins,
/// and a real runtime driving them (tests/tests/podman.rs: podman 4.3 with runc; crun 1.8
/// refuses this machine's hybrid cgroup layout).
/// The dynamic `busybox` package also installs /bin/busybox, so busybox-static is probed by
/// its doc directory's copyright file (kept even where dpkg excludes /usr/share/doc).
pub const TEST_PACKAGES: &[AptPackage] = &[
    pkg("iproute2", "ip"),
    pkg("iputils-ping", "ping"),
    pkg("iperf3", "iperf3"),
    pkg("ethtool", "ethtool"),
    pkg("bpftool", "bpftool"),
    pkg("qemu-system-x86", "qemu-system-x86_64"),
    pkg("busybox-static", "/usr/share/doc/busybox-static/copyright"),
    pkg("containernetworking-plugins", "/usr/lib/cni/ptp"),
    pkg("podman", "podman"),
    pkg("runc", "runc"),
];

/// What `cargo xtask bench` runs (xtask/src/bench/): iperf3, sockperf (TCP ping-pong),
/// ethtool, `ip`/`ss`, `ping`, bpftool (the eBPF program's run time).
pub const BENCH_PACKAGES: &[AptPackage] = &[
    pkg("iproute2", "ip"),
    pkg("iputils-ping", "ping"),
    pkg("iperf3", "iperf3"),
    pkg("sockperf", "sockperf"),
    pkg("ethtool", "ethtool"),
    pkg("bpftool", "bpftool"),
];

/// The packages `purposes` need, each once, in list order.
pub fn for_purposes(purposes: &[Purpose]) -> Vec<AptPackage> {
    let mut out: Vec<AptPackage> = Vec::new();
    for p in purposes.iter().flat_map(|p| p.packages()) {
        if !out.iter().any(|o| o.name == p.name) {
            out.push(*p);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(list: &[AptPackage]) -> Vec<&'static str> {
        list.iter().map(|p| p.name).collect()
    }

    /// A fresh machine's `cargo xtask demo` installed QEMU and a host kernel (with initramfs
    /// generation) that only the tests use.
    #[test]
    fn the_demo_installs_only_what_the_demo_runs() {
        let demo = names(&for_purposes(&[Purpose::Demo]));
        for only_tests in [
            "qemu-system-x86",
            "linux-image-amd64",
            "busybox-static",
            "containernetworking-plugins",
            "bpftool",
            "sockperf",
        ] {
            assert!(!demo.contains(&only_tests), "{only_tests} in {demo:?}");
        }
        assert!(
            !demo
                .iter()
                .any(|n| n.starts_with("qemu") || n.starts_with("linux-image")),
            "{demo:?}"
        );
        assert_eq!(demo, ["iproute2", "iputils-ping", "iperf3"]);
    }

    #[test]
    fn no_list_installs_a_host_kernel() {
        for p in Purpose::ALL {
            assert!(
                !names(p.packages())
                    .iter()
                    .any(|n| n.starts_with("linux-image")),
                "{p:?}: the guest kernel is unpacked into a cache dir, never installed"
            );
        }
    }

    #[test]
    fn each_list_names_a_package_once_and_the_union_keeps_one_of_each() {
        for p in Purpose::ALL {
            let mut n = names(p.packages());
            let len = n.len();
            n.sort_unstable();
            n.dedup();
            assert_eq!(n.len(), len, "{p:?}");
        }
        let all = names(&for_purposes(&Purpose::ALL));
        assert_eq!(all.iter().filter(|n| **n == "iproute2").count(), 1);
        assert!(all.contains(&"qemu-system-x86") && all.contains(&"sockperf"));
        assert!(
            for_purposes(&[]).is_empty(),
            "lint and fuzz need no packages"
        );
    }
}
