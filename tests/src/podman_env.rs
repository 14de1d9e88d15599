//! A podman of its own for tests: podman 4.3 (Debian) with its CNI backend and runc, none of
//! the host's podman setup used or changed.
//!
//! [`PodmanEnv`] gives podman a containers.conf of its own (`CONTAINERS_CONF`), and puts its
//! storage (`--root`/`--runroot`), tmp dir, file locks, events log, CNI configuration dir
//! (`net.d`) and CNI plugin dir (`bin`) in a temporary directory; `leases` is there for
//! host-local's `dataDir`. podman runs from a thread inside a network namespace the test
//! creates, so the bridge plugin puts its bridge and the host ends of the container veths
//! there, never in the root netns. libcni caches results under /var/lib/cni (podman 4.3 has
//! no setting for it): what the test's network left there goes again on Drop.
//!
//! Facts of this machine the configuration answers: root lacks CAP_SYS_RESOURCE, so
//! podman's default rlimits fail (`default_ulimits`); the cgroup layout is hybrid v1+v2,
//! which crun 1.8 refuses (`runtime = "runc"`). No registry is reachable: containers run
//! from a busybox-static rootfs (`podman run --rootfs`, [`PodmanEnv::rootfs`]), or from an
//! image built `FROM scratch`.

use std::{
    path::{Path, PathBuf},
    process::{Command, Output},
    sync::{Mutex, MutexGuard},
};

use crate::TestNetns;

/// Where Debian's containernetworking-plugins are.
pub const PLUGIN_DIR: &str = "/usr/lib/cni";
/// libcni's cache (results of ADD, read back by DEL and reload).
pub const CNI_CACHE: &str = "/var/lib/cni";

/// The tests of a process that run podman take turns: they share libcni's cache directory,
/// whose removal at the end must not race another test's podman.
pub fn serial() -> MutexGuard<'static, ()> {
    static SERIAL: Mutex<()> = Mutex::new(());
    SERIAL.lock().unwrap_or_else(|p| p.into_inner())
}

/// Whether the test must be skipped (not root) — true after saying why; panics when podman
/// or runc is missing (`cargo xtask setup` installs them for the tests).
pub fn podman_missing() -> bool {
    if crate::skip_unless_root() {
        return true;
    }
    let missing: Vec<&str> = ["podman", "runc"]
        .into_iter()
        .filter(|t| {
            !Command::new(t)
                .arg("--version")
                .output()
                .is_ok_and(|o| o.status.success())
        })
        .collect();
    assert!(
        missing.is_empty(),
        "{missing:?} missing: run `cargo xtask setup` (Debian packages podman, runc)"
    );
    false
}

/// A podman of its own in `dir` (see the module docs), running in `host`. Drop removes
/// every container, the directory and the libcni cache entries of `network`.
pub struct PodmanEnv {
    dir: PathBuf,
    /// Where podman and the plugins run: the bridge is made here.
    pub host: TestNetns,
    /// The CNI network's name (libcni's cache entries are named after it).
    pub network: String,
    /// libcni's cache existed before this test (then it is left as it is).
    cache_existed: bool,
}

impl PodmanEnv {
    /// Makes `dir` with its subdirectories, the busybox rootfs and containers.conf.
    pub fn new(dir: PathBuf, host: TestNetns, network: String) -> PodmanEnv {
        let env = PodmanEnv {
            dir,
            host,
            network,
            cache_existed: Path::new(CNI_CACHE).exists(),
        };
        for sub in [
            "net.d",
            "bin",
            "leases",
            "root",
            "runroot",
            "tmp",
            "rootfs/bin",
        ] {
            std::fs::create_dir_all(env.path(sub)).expect("create the podman test dirs");
        }
        env.write_rootfs();
        env.write_containers_conf();
        env
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.join(rel)
    }

    /// host-local's leases of the network: the files of its data dir (`leases/<network>`)
    /// named by an IP address.
    pub fn leases(&self) -> Vec<String> {
        std::fs::read_dir(self.path("leases").join(&self.network))
            .map(|entries| {
                entries
                    .filter_map(|e| e.ok())
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .filter(|n| n.parse::<std::net::IpAddr>().is_ok())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The CNI configuration dir (`network_config_dir`).
    pub fn conf_dir(&self) -> PathBuf {
        self.path("net.d")
    }

    /// The CNI plugin dir (`cni_plugin_dirs`).
    pub fn bin_dir(&self) -> PathBuf {
        self.path("bin")
    }

    /// The busybox rootfs (`podman run --rootfs`).
    pub fn rootfs(&self) -> PathBuf {
        self.path("rootfs")
    }

    /// busybox-static as the whole container image.
    fn write_rootfs(&self) {
        let bin = self.path("rootfs/bin");
        std::fs::copy("/bin/busybox", bin.join("busybox")).expect("copy /bin/busybox");
        for applet in ["sh", "sleep", "ip", "cat"] {
            std::os::unix::fs::symlink("busybox", bin.join(applet)).expect("busybox applet link");
        }
    }

    fn write_containers_conf(&self) {
        let p = |rel: &str| self.path(rel).display().to_string();
        let conf = format!(
            r#"[containers]
default_ulimits = ["nofile=20000:20000", "nproc=4096:4096"]

[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "file"
events_logfile_path = "{events}"
tmp_dir = "{tmp}"
lock_type = "file"

[network]
network_backend = "cni"
cni_plugin_dirs = ["{bin}"]
network_config_dir = "{netd}"
"#,
            events = p("events.log"),
            tmp = p("tmp"),
            bin = p("bin"),
            netd = p("net.d"),
        );
        std::fs::write(self.path("containers.conf"), conf).expect("write containers.conf");
    }

    /// Runs `podman args…` from a thread inside the host netns.
    pub fn podman(&self, args: &[&str]) -> Output {
        let mut cmd = Command::new("podman");
        cmd.env("CONTAINERS_CONF", self.path("containers.conf"))
            .arg("--root")
            .arg(self.path("root"))
            .arg("--runroot")
            .arg(self.path("runroot"))
            .args(args);
        self.host
            .run(|| cmd.output())
            .unwrap_or_else(|e| panic!("run podman {args:?}: {e}"))
    }
}

impl Drop for PodmanEnv {
    fn drop(&mut self) {
        let out = self.podman(&["rm", "--all", "--force", "--time", "0"]);
        if !out.status.success() {
            eprintln!(
                "warning: podman rm --all: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let _ = std::fs::remove_dir_all(&self.dir);
        // libcni's cached results of this test's network (its name is the test's own): DEL
        // removes them, but not one cached under an interface name podman later tore down
        // under another name.
        let results = Path::new(CNI_CACHE).join("results");
        if let Ok(entries) = std::fs::read_dir(&results) {
            let prefix = format!("{}-", self.network);
            for e in entries.filter_map(|e| e.ok()) {
                if e.file_name().to_string_lossy().starts_with(&prefix) {
                    let _ = std::fs::remove_file(e.path());
                }
            }
        }
        if !self.cache_existed {
            // Only empty directories may be left of what libcni made; a file there is
            // someone else's, and stays.
            let _ = std::fs::remove_dir(&results);
            let _ = std::fs::remove_dir(CNI_CACHE);
        }
    }
}
