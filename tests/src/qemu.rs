//! A real VMM behind netshim's tap: QEMU (always TCG) booting the host's Debian kernel with a
//! tiny busybox initramfs built here, configured from netshim's attach JSON.
//!
//! - [`GuestAssets::get`]: finds `qemu-system-x86_64`, a Debian kernel ([`find_kernel`]:
//!   the one `cargo xtask setup` unpacked, else the host's `/boot/vmlinuz-<ver>`) and a static
//!   busybox, and builds the base initramfs once per process (kept in memory, no files left).
//!   [`AssetsError::Missing`] means "skip the test"; anything else is a failure.
//! - [`Initramfs`]: an in-memory newc (cpio) archive: busybox, `/init` ([`DEFAULT_INIT`]) and
//!   the virtio-net modules of the kernel ([`GUEST_MODULES`], decompressed if needed).
//! - [`GuestNetConfig`] (from [`GuestNetConfig::from_attach_json`]) and [`GuestConfig`]: what
//!   the guest's `/init` applies with busybox `ip`/`arp`; written as shell into a small cpio
//!   archive appended to the base one for each boot (the kernel unpacks concatenated archives).
//! - [`Qemu::start_in_netns`] / [`Qemu::boot`]: runs QEMU in a netns on a tap given by name
//!   or as an fd ([`NetdevSpec`]), captures the serial console ([`QemuGuard::wait_for`]) and
//!   kills QEMU on Drop.
//!
//! The guest prints markers on its console: `NETSHIM-GUEST-READY <ip>` once its network is
//! configured, `NETSHIM-GUEST-PING-OK <ip> …` / `NETSHIM-GUEST-PING-FAIL <ip> …` for every
//! ping target (a link-local IPv6 one is pinged on the first NIC), `NETSHIM-GUEST-NETCFG-FAIL
//! <cmd>` for a configuration command that failed. A NIC with IPv6 addresses counts as
//! configured once duplicate address detection is over (`NETSHIM-GUEST-IPV6-READY <if>`); its
//! link-local address is the guest kernel's own, not the one attach reported.

use std::fmt;
use std::io::{self, Read, Write};
use std::net::IpAddr;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Condvar, Mutex, OnceLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::{ChildGuard, TestNetns};

/// The modules `/init` loads, in this order (paths relative to `/lib/modules/<ver>/kernel/`,
/// without the `.ko[.xz|.zst|.gz]` suffix). Those the kernel has built in are left out.
pub const GUEST_MODULES: &[&str] = &[
    "drivers/virtio/virtio_ring",
    "drivers/virtio/virtio",
    "drivers/virtio/virtio_pci_modern_dev",
    "drivers/virtio/virtio_pci_legacy_dev",
    "drivers/virtio/virtio_pci",
    "net/core/failover",
    "drivers/net/net_failover",
    "drivers/net/virtio_net",
];

/// Console markers printed by [`DEFAULT_INIT`].
pub const READY_MARKER: &str = "NETSHIM-GUEST-READY";
pub const PING_OK_MARKER: &str = "NETSHIM-GUEST-PING-OK";
pub const PING_FAIL_MARKER: &str = "NETSHIM-GUEST-PING-FAIL";
pub const NETCFG_FAIL_MARKER: &str = "NETSHIM-GUEST-NETCFG-FAIL";
pub const INSMOD_FAIL_MARKER: &str = "NETSHIM-GUEST-INSMOD-FAIL";

/// The guest's `/init`. It sources `/etc/netshim/net.sh` (network, see
/// [`GuestNetConfig::shell`]) and `/etc/netshim/guest.sh` (behaviour, see
/// [`GuestConfig::shell`]), which each boot appends; without them it only boots.
pub const DEFAULT_INIT: &str = r#"#!/bin/sh
# netshim test guest (built by netshim_tests::qemu).
/bin/busybox mkdir -p /bin /sbin /usr/bin /usr/sbin /proc /sys /dev /tmp /run /www
/bin/busybox --install -s
export PATH=/bin:/sbin:/usr/bin:/usr/sbin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
up() { cut -d' ' -f1 /proc/uptime; }
echo "NETSHIM-GUEST-INIT uptime=$(up)"
for m in $(cat /etc/netshim/modules); do
    insmod "/lib/modules/netshim/$m.ko" || echo "NETSHIM-GUEST-INSMOD-FAIL $m"
done
fail() { echo "NETSHIM-GUEST-NETCFG-FAIL $*"; }
run() { "$@" || fail "$@"; }
# nic MAC IFNAME: waits up to 10 s for the NIC with that MAC, renames it to IFNAME, sets IF.
nic() {
    IF=
    i=0
    while [ "$i" -lt 100 ]; do
        for d in /sys/class/net/*; do
            [ "$(cat "$d/address" 2>/dev/null)" = "$1" ] && IF=${d##*/}
        done
        [ -n "$IF" ] && break
        usleep 100000
        i=$((i + 1))
    done
    if [ -z "$IF" ]; then
        fail "no NIC with MAC $1"
        IF=$2
        return 1
    fi
    if [ "$IF" != "$2" ]; then
        run ip link set dev "$IF" name "$2"
        IF=$2
    fi
}
ip link set dev lo up
READY_IP=none
PING_TARGETS=
PING_IF=
HTTP_PORT=
V6_NICS=
if [ -f /etc/netshim/net.sh ]; then
    grep '^run' /etc/netshim/net.sh | sed 's/^run /NETSHIM-GUEST-NETCFG /'
    . /etc/netshim/net.sh
fi
[ -f /etc/netshim/guest.sh ] && . /etc/netshim/guest.sh
# A NIC with IPv6 addresses is ready once it has its link-local address and duplicate
# address detection is over (a tentative address cannot be used): up to 10 s each.
for d in $V6_NICS; do
    i=0
    while [ "$i" -lt 100 ]; do
        a=$(ip -6 addr show dev "$d")
        case "$a" in *"scope link"*) case "$a" in *tentative*) ;; *) break ;; esac ;; esac
        usleep 100000
        i=$((i + 1))
    done
    if [ "$i" -lt 100 ]; then
        echo "NETSHIM-GUEST-IPV6-READY $d uptime=$(up)"
    else
        fail "IPv6 on $d not ready after 10 s: $(ip -6 addr show dev "$d" | tr '\n' ' ')"
    fi
done
ip -o addr show | sed 's/^/NETSHIM-GUEST-ADDR /'
ip route show | sed 's/^/NETSHIM-GUEST-ROUTE /'
ip neigh show | sed 's/^/NETSHIM-GUEST-NEIGH /'
if [ -n "$HTTP_PORT" ]; then
    echo "NETSHIM-GUEST-HTTP $READY_IP" > /www/index.html
    dd if=/dev/zero of=/www/blob bs=1024 count=1024 2>/dev/null
    httpd -p "$HTTP_PORT" -h /www || fail httpd
fi
echo "NETSHIM-GUEST-READY $READY_IP uptime=$(up)"
for t in $PING_TARGETS; do
    # A link-local target needs its interface (scope).
    dst=$t
    case "$t" in fe80:*) dst="$t%$PING_IF" ;; esac
    ok=
    for try in 1 2 3 4 5; do
        if ping -c 3 -W 2 "$dst" > /tmp/ping 2>&1; then ok=1; break; fi
    done
    summary=$(grep transmitted /tmp/ping)
    if [ -n "$ok" ]; then
        echo "NETSHIM-GUEST-PING-OK $t try=$try $summary"
    else
        echo "NETSHIM-GUEST-PING-FAIL $t $summary"
    fi
done
echo "NETSHIM-GUEST-IDLE uptime=$(up)"
while true; do sleep 600; done
"#;

/// A route the guest adds (`ip route replace`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    /// CIDR (`10.0.0.0/24`, `fd00::/64`) or `default` (for 0.0.0.0/0 and ::/0).
    pub dest: String,
    pub gateway: Option<IpAddr>,
    pub mtu: Option<u32>,
    /// Preferred source address (`src`).
    pub source: Option<IpAddr>,
}

/// One guest NIC's network configuration, as the guest applies it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GuestNetConfig {
    /// `aa:bb:cc:dd:ee:ff` (lower case): QEMU's `-device …,mac=` and how `/init` finds the NIC.
    pub mac: String,
    /// The name `/init` gives the NIC (`eth<N>`).
    pub ifname: String,
    pub mtu: u32,
    pub addresses: Vec<(IpAddr, u8)>,
    pub routes: Vec<Route>,
    /// Permanent neighbour entries (IP, MAC); IPv4 only (busybox has no `ip neigh add`).
    pub neighbors: Vec<(IpAddr, String)>,
}

impl GuestNetConfig {
    /// Reads endpoint `endpoint_index` of `netshim attach --json` output (the element whose
    /// `index` is that, else the one at that position): `mac`, `mtu`, `addresses`
    /// (`[{address, prefix_len}]`, netshim's `IfAddr`), `guest_ifname`, and when present
    /// `routes` (`[{destination, gateway?, source?, mtu?}]`, its `GuestRoute`) and
    /// `neighbors` (`[{address, mac}]`, its `GuestNeighbor`): the names netshim's types
    /// have (docs/schema/attach.json), which a unit test checks against those types.
    pub fn from_attach_json(report: &Value, endpoint_index: usize) -> Result<Self, String> {
        let eps = report["endpoints"]
            .as_array()
            .ok_or_else(|| format!("no endpoints array in {report}"))?;
        let ep = eps
            .iter()
            .find(|e| e["index"].as_u64() == Some(endpoint_index as u64))
            .or_else(|| eps.get(endpoint_index))
            .ok_or_else(|| format!("no endpoint {endpoint_index} in {report}"))?;
        let mac = ep["mac"]
            .as_str()
            .ok_or_else(|| format!("endpoint {endpoint_index} has no mac: {ep}"))?;
        let mac = normalize_mac(mac)?;
        let mtu = ep["mtu"].as_u64().unwrap_or(1500) as u32;
        let ifname = ep["guest_ifname"]
            .as_str()
            .map(str::to_owned)
            .unwrap_or_else(|| format!("eth{endpoint_index}"));
        let mut addresses = Vec::new();
        for a in ep["addresses"].as_array().into_iter().flatten() {
            let ip = a["address"]
                .as_str()
                .ok_or_else(|| format!("address without address: {a}"))?;
            let ip: IpAddr = ip.parse().map_err(|e| format!("address {ip}: {e}"))?;
            let len = a["prefix_len"]
                .as_u64()
                .ok_or_else(|| format!("address without prefix_len: {a}"))?;
            addresses.push((ip, len as u8));
        }
        let mut routes = Vec::new();
        for r in ep["routes"].as_array().into_iter().flatten() {
            routes.push(parse_route(r)?);
        }
        let mut neighbors = Vec::new();
        for n in ep["neighbors"].as_array().into_iter().flatten() {
            let ip = n["address"]
                .as_str()
                .ok_or_else(|| format!("neighbor without address: {n}"))?;
            let ip: IpAddr = ip.parse().map_err(|e| format!("neighbor {ip}: {e}"))?;
            let mac = n["mac"]
                .as_str()
                .ok_or_else(|| format!("neighbor without mac: {n}"))?;
            neighbors.push((ip, normalize_mac(mac)?));
        }
        Ok(GuestNetConfig {
            mac,
            ifname,
            mtu,
            addresses,
            routes,
            neighbors,
        })
    }

    /// The first address (the pod IP), if any.
    pub fn primary_ip(&self) -> Option<IpAddr> {
        self.addresses.first().map(|a| a.0)
    }

    /// Shell lines for `/init` (uses its `nic` and `run` helpers): find and name the NIC,
    /// set MTU, bring it up, add the addresses. Routes and neighbours are in
    /// [`Self::shell_routes`], applied after every NIC has its addresses.
    pub fn shell_link(&self) -> String {
        let ifname = &self.ifname;
        let mut s = format!("nic {} {ifname}\n", self.mac);
        s += &format!("run ip link set dev {ifname} mtu {}\n", self.mtu);
        s += &format!("run ip link set dev {ifname} up\n");
        let mut v6 = false;
        for (ip, len) in &self.addresses {
            if let IpAddr::V6(a) = ip {
                if a.is_unicast_link_local() {
                    // The guest's kernel gives the NIC its own (EUI-64 of the same MAC);
                    // adding it again would fail with EEXIST.
                    s += &format!(
                        "echo 'NETSHIM-GUEST-NETCFG-SKIP address {ip}/{len} (link-local: \
                         the kernel makes its own)'\n"
                    );
                    continue;
                }
                v6 = true;
            }
            s += &format!("run ip addr add {ip}/{len} dev {ifname}\n");
        }
        if v6 {
            s += &format!("V6_NICS=\"$V6_NICS {ifname}\"\n");
        }
        s
    }

    /// Shell lines for the routes (gateway-less ones first, so gateways they make reachable
    /// exist before routes through them, as kata's agent orders them) and neighbours.
    pub fn shell_routes(&self) -> String {
        let ifname = &self.ifname;
        let mut s = String::new();
        let mut routes: Vec<&Route> = self.routes.iter().collect();
        routes.sort_by_key(|r| r.gateway.is_some());
        for r in routes {
            let family = match (r.gateway, r.dest.contains(':')) {
                (Some(IpAddr::V6(_)), _) | (None, true) => "-6 ",
                _ => "",
            };
            s += &format!("run ip {family}route replace {}", r.dest);
            if let Some(gw) = r.gateway {
                s += &format!(" via {gw}");
            }
            s += &format!(" dev {ifname}");
            if let Some(src) = r.source {
                s += &format!(" src {src}");
            }
            if let Some(mtu) = r.mtu {
                s += &format!(" mtu {mtu}");
            }
            s += "\n";
        }
        for (ip, mac) in &self.neighbors {
            match ip {
                IpAddr::V4(_) => s += &format!("run arp -i {ifname} -s {ip} {mac}\n"),
                IpAddr::V6(_) => {
                    s += &format!("echo 'NETSHIM-GUEST-NETCFG-SKIP neighbor {ip} (IPv6)'\n")
                }
            }
        }
        s
    }
}

fn parse_route(r: &Value) -> Result<Route, String> {
    let dest = r["destination"].as_str().unwrap_or("default");
    let dest = match dest {
        "" | "0.0.0.0/0" | "::/0" => "default".to_owned(),
        _ => dest.to_owned(),
    };
    let gateway = match r["gateway"].as_str() {
        Some("") | None => None,
        Some(g) => Some(g.parse().map_err(|e| format!("route gateway {g}: {e}"))?),
    };
    let mtu = r["mtu"].as_u64().filter(|m| *m > 0).map(|m| m as u32);
    let source = match r["source"].as_str() {
        Some("") | None => None,
        Some(a) => Some(a.parse().map_err(|e| format!("route source {a}: {e}"))?),
    };
    Ok(Route {
        dest,
        gateway,
        mtu,
        source,
    })
}

fn normalize_mac(mac: &str) -> Result<String, String> {
    mac.parse::<netshim::interfaces::Mac>()
        .map(|m| m.to_string())
        .map_err(|_| format!("bad MAC {mac:?}"))
}

/// What a booted guest does: its NICs, which addresses it pings once configured, and whether
/// it serves HTTP (busybox httpd: `/index.html` = `NETSHIM-GUEST-HTTP <ip>`, `/blob` = 1 MiB).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GuestConfig {
    pub nics: Vec<GuestNetConfig>,
    pub ping: Vec<IpAddr>,
    pub http_port: Option<u16>,
}

impl GuestConfig {
    /// A guest with one NIC.
    pub fn single(nic: GuestNetConfig) -> Self {
        GuestConfig {
            nics: vec![nic],
            ..Default::default()
        }
    }

    /// `/etc/netshim/net.sh`: every NIC's link and addresses, then routes and neighbours.
    pub fn net_shell(&self) -> String {
        let mut s = String::from("# generated by netshim_tests::qemu\n");
        for n in &self.nics {
            s += &n.shell_link();
        }
        for n in &self.nics {
            s += &n.shell_routes();
        }
        s
    }

    /// `/etc/netshim/guest.sh`: variables `/init` reads.
    pub fn shell(&self) -> String {
        let ready = self
            .nics
            .first()
            .and_then(|n| n.primary_ip())
            .map(|ip| ip.to_string())
            .unwrap_or_else(|| "none".into());
        let ping: Vec<String> = self.ping.iter().map(|ip| ip.to_string()).collect();
        let ping_if = self.nics.first().map_or("eth0", |n| n.ifname.as_str());
        format!(
            "READY_IP={ready}\nPING_TARGETS=\"{}\"\nPING_IF={ping_if}\nHTTP_PORT={}\n",
            ping.join(" "),
            self.http_port.map(|p| p.to_string()).unwrap_or_default()
        )
    }

    /// The small archive appended to the base initramfs for one boot.
    pub fn overlay(&self) -> Initramfs {
        let mut fs = Initramfs::new();
        fs.file("etc/netshim/net.sh", self.net_shell().into_bytes(), 0o644);
        fs.file("etc/netshim/guest.sh", self.shell().into_bytes(), 0o644);
        fs
    }
}

enum Node {
    Dir,
    File(Vec<u8>),
    Symlink(String),
    CharDev(u32, u32),
}

struct Entry {
    path: String,
    mode: u32,
    node: Node,
}

/// An in-memory initramfs: entries written as a newc ("070701") cpio archive. Parent
/// directories are added automatically.
#[derive(Default)]
pub struct Initramfs {
    entries: Vec<Entry>,
}

impl fmt::Debug for Initramfs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let paths: Vec<&str> = self.entries.iter().map(|e| e.path.as_str()).collect();
        f.debug_struct("Initramfs").field("paths", &paths).finish()
    }
}

impl Initramfs {
    pub fn new() -> Self {
        Self::default()
    }

    fn has(&self, path: &str) -> bool {
        self.entries.iter().any(|e| e.path == path)
    }

    fn push(&mut self, path: &str, mode: u32, node: Node) {
        let path = path.trim_start_matches('/');
        let mut parent = String::new();
        for part in path.split('/').collect::<Vec<_>>().split_last().unwrap().1 {
            if !parent.is_empty() {
                parent.push('/');
            }
            parent.push_str(part);
            if !self.has(&parent) {
                self.entries.push(Entry {
                    path: parent.clone(),
                    mode: 0o755,
                    node: Node::Dir,
                });
            }
        }
        self.entries.retain(|e| e.path != path);
        self.entries.push(Entry {
            path: path.to_owned(),
            mode,
            node,
        });
    }

    pub fn dir(&mut self, path: &str) {
        if !self.has(path.trim_start_matches('/')) {
            self.push(path, 0o755, Node::Dir);
        }
    }

    pub fn file(&mut self, path: &str, data: Vec<u8>, mode: u32) {
        self.push(path, mode, Node::File(data));
    }

    pub fn symlink(&mut self, path: &str, target: &str) {
        self.push(path, 0o777, Node::Symlink(target.to_owned()));
    }

    pub fn char_dev(&mut self, path: &str, mode: u32, major: u32, minor: u32) {
        self.push(path, mode, Node::CharDev(major, minor));
    }

    /// The test guest: static busybox at `/bin/busybox` (plus `/bin/sh`), `init_script` as
    /// `/init`, `/dev/console`, and the virtio-net modules of the kernel whose
    /// `lib/modules/<ver>` is `moddir` (`/lib/modules/netshim/<name>.ko`, decompressed; load
    /// order in `/etc/netshim/modules`).
    pub fn for_guest(moddir: &Path, busybox: &Path, init_script: &str) -> io::Result<Self> {
        let mut fs = Initramfs::new();
        for d in [
            "bin", "sbin", "usr/bin", "usr/sbin", "proc", "sys", "dev", "tmp", "etc",
        ] {
            fs.dir(d);
        }
        fs.char_dev("dev/console", 0o600, 5, 1);
        fs.file("bin/busybox", std::fs::read(busybox)?, 0o755);
        fs.symlink("bin/sh", "busybox");
        fs.file("init", init_script.as_bytes().to_vec(), 0o755);
        let builtin = std::fs::read_to_string(moddir.join("modules.builtin")).unwrap_or_default();
        let mut order = String::new();
        for m in GUEST_MODULES {
            let name = m.rsplit('/').next().unwrap();
            match read_module(&moddir.join("kernel").join(m))? {
                Some(ko) => {
                    fs.file(&format!("lib/modules/netshim/{name}.ko"), ko, 0o644);
                    order += name;
                    order += "\n";
                }
                None if builtin
                    .lines()
                    .any(|l| l.starts_with(&format!("kernel/{m}.ko"))) => {}
                None => {
                    return Err(io::Error::new(
                        io::ErrorKind::NotFound,
                        format!(
                            "{}/kernel/{m}.ko: neither a module file nor built in",
                            moddir.display()
                        ),
                    ))
                }
            }
        }
        fs.file("etc/netshim/modules", order.into_bytes(), 0o644);
        Ok(fs)
    }

    /// Builds the test guest's initramfs ([`Self::for_guest`] with the busybox found on this
    /// machine) and writes it gzip-compressed to `dir/initramfs.cpio.gz`.
    pub fn build(dir: &Path, moddir: &Path, init_script: &str) -> io::Result<PathBuf> {
        let busybox =
            find_static_busybox().map_err(|e| io::Error::new(io::ErrorKind::NotFound, e))?;
        let fs = Self::for_guest(moddir, &busybox, init_script)?;
        let path = dir.join("initramfs.cpio.gz");
        std::fs::write(&path, fs.to_gzip()?)?;
        Ok(path)
    }

    /// The archive in newc format, with its `TRAILER!!!`, padded to 4 bytes.
    pub fn to_newc(&self) -> Vec<u8> {
        let mut out = Vec::new();
        for (i, e) in self.entries.iter().enumerate() {
            let (kind, data, rdev): (u32, &[u8], (u32, u32)) = match &e.node {
                Node::Dir => (0o040000, &[], (0, 0)),
                Node::File(d) => (0o100000, d, (0, 0)),
                Node::Symlink(t) => (0o120000, t.as_bytes(), (0, 0)),
                Node::CharDev(ma, mi) => (0o020000, &[], (*ma, *mi)),
            };
            let nlink = if matches!(e.node, Node::Dir) { 2 } else { 1 };
            newc_entry(
                &mut out,
                i as u32 + 1,
                kind | e.mode,
                nlink,
                rdev,
                &e.path,
                data,
            );
        }
        newc_entry(&mut out, 0, 0, 1, (0, 0), "TRAILER!!!", &[]);
        out
    }

    /// [`Self::to_newc`] compressed with `gzip -1` (uncompressed when there is no gzip: the
    /// kernel takes both), padded with zeros to 4 bytes so that another archive can follow.
    pub fn to_gzip(&self) -> io::Result<Vec<u8>> {
        let raw = self.to_newc();
        let mut out = match pipe_through(Command::new("gzip").args(["-n", "-1", "-c"]), &raw) {
            Ok(gz) => gz,
            Err(e) if e.kind() == io::ErrorKind::NotFound => raw,
            Err(e) => return Err(e),
        };
        pad4(&mut out);
        Ok(out)
    }
}

fn newc_entry(
    out: &mut Vec<u8>,
    ino: u32,
    mode: u32,
    nlink: u32,
    rdev: (u32, u32),
    name: &str,
    data: &[u8],
) {
    let fields = [
        ino,
        mode,
        0, // uid
        0, // gid
        nlink,
        0, // mtime: reproducible
        data.len() as u32,
        0, // devmajor
        0, // devminor
        rdev.0,
        rdev.1,
        name.len() as u32 + 1,
        0, // check
    ];
    out.extend_from_slice(b"070701");
    for f in fields {
        out.extend_from_slice(format!("{f:08x}").as_bytes());
    }
    out.extend_from_slice(name.as_bytes());
    out.push(0);
    pad4(out);
    out.extend_from_slice(data);
    pad4(out);
}

fn pad4(out: &mut Vec<u8>) {
    while !out.len().is_multiple_of(4) {
        out.push(0);
    }
}

/// Runs `cmd` with `input` on stdin and returns its stdout (fails unless it exits 0).
fn pipe_through(cmd: &mut Command, input: &[u8]) -> io::Result<Vec<u8>> {
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    let mut stdin = child.stdin.take().unwrap();
    let mut stdout = child.stdout.take().unwrap();
    let out = std::thread::scope(|s| {
        s.spawn(move || {
            let _ = stdin.write_all(input);
        });
        let mut out = Vec::new();
        stdout.read_to_end(&mut out).map(|_| out)
    })?;
    let res = child.wait_with_output()?;
    if !res.status.success() {
        return Err(io::Error::other(format!(
            "{cmd:?} exited {}: {}",
            res.status,
            String::from_utf8_lossy(&res.stderr)
        )));
    }
    Ok(out)
}

/// Reads `<base>.ko`, or `.ko.xz` / `.ko.zst` / `.ko.gz` decompressed (busybox insmod
/// takes plain modules only). `None` when none exists.
fn read_module(base: &Path) -> io::Result<Option<Vec<u8>>> {
    let with = |ext: &str| PathBuf::from(format!("{}{ext}", base.display()));
    let plain = with(".ko");
    if plain.exists() {
        return std::fs::read(plain).map(Some);
    }
    for (ext, tool) in [(".ko.xz", "xz"), (".ko.zst", "zstd"), (".ko.gz", "gzip")] {
        let p = with(ext);
        if p.exists() {
            let out = Command::new(tool)
                .arg("-dc")
                .arg(&p)
                .output()
                .map_err(|e| {
                    io::Error::new(e.kind(), format!("{tool} -dc {}: {e}", p.display()))
                })?;
            if !out.status.success() {
                return Err(io::Error::other(format!(
                    "{tool} -dc {}: {}",
                    p.display(),
                    String::from_utf8_lossy(&out.stderr)
                )));
            }
            return Ok(Some(out.stdout));
        }
    }
    Ok(None)
}

/// Why [`GuestAssets::get`] has no assets.
#[derive(Debug, Clone)]
pub enum AssetsError {
    /// Something is not installed (qemu-system-x86_64, /boot/vmlinuz-*, static busybox):
    /// skip the test with this reason.
    Missing(String),
    /// Everything is installed but building the initramfs failed: a test failure.
    Broken(String),
}

impl fmt::Display for AssetsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AssetsError::Missing(s) => write!(f, "missing: {s}"),
            AssetsError::Broken(s) => write!(f, "broken: {s}"),
        }
    }
}

/// What booting a test guest needs, found and built once per process.
#[derive(Debug)]
pub struct GuestAssets {
    pub qemu: PathBuf,
    pub kernel: PathBuf,
    pub kernel_version: String,
    /// The kernel's `lib/modules/<ver>`.
    pub modules_dir: PathBuf,
    pub busybox: PathBuf,
    /// The base initramfs (busybox, /init, modules), gzip'd and padded to 4 bytes.
    pub base_initrd: Vec<u8>,
    /// How long finding and building took.
    pub build_time: Duration,
}

impl GuestAssets {
    /// The assets, looked up and built on first use.
    pub fn get() -> Result<&'static GuestAssets, AssetsError> {
        static ASSETS: OnceLock<Result<GuestAssets, AssetsError>> = OnceLock::new();
        ASSETS
            .get_or_init(Self::find_and_build)
            .as_ref()
            .map_err(Clone::clone)
    }

    /// For tests: `Some(assets)`, or `None` after printing why the test is skipped. Panics
    /// when the assets are installed but broken.
    pub fn or_skip() -> Option<&'static GuestAssets> {
        match Self::get() {
            Ok(a) => Some(a),
            Err(AssetsError::Missing(why)) => {
                eprintln!("skipping: {why}");
                None
            }
            Err(e @ AssetsError::Broken(_)) => panic!("guest assets: {e}"),
        }
    }

    fn find_and_build() -> Result<GuestAssets, AssetsError> {
        let t0 = Instant::now();
        let qemu = which("qemu-system-x86_64").ok_or_else(|| {
            AssetsError::Missing(
                "qemu-system-x86_64 not found (cargo xtask setup --for test installs qemu-system-x86)".into(),
            )
        })?;
        let GuestKernel {
            image: kernel,
            version: kernel_version,
            modules_dir,
        } = find_kernel().map_err(AssetsError::Missing)?;
        let busybox = find_static_busybox().map_err(AssetsError::Missing)?;
        let fs = Initramfs::for_guest(&modules_dir, &busybox, DEFAULT_INIT)
            .map_err(|e| AssetsError::Broken(format!("initramfs for {kernel_version}: {e}")))?;
        let base_initrd = fs
            .to_gzip()
            .map_err(|e| AssetsError::Broken(format!("compress initramfs: {e}")))?;
        Ok(GuestAssets {
            qemu,
            kernel,
            kernel_version,
            modules_dir,
            busybox,
            base_initrd,
            build_time: t0.elapsed(),
        })
    }

    /// Writes base initramfs + `config`'s overlay to `path`.
    pub fn write_initrd(&self, config: &GuestConfig, path: &Path) -> io::Result<()> {
        let mut bytes = self.base_initrd.clone();
        bytes.extend_from_slice(&config.overlay().to_newc());
        std::fs::write(path, bytes)
    }
}

/// An executable on PATH, or in the sbin and bin directories (not always on PATH).
fn which(name: &str) -> Option<PathBuf> {
    which::which(name)
        .or_else(|_| which::which_in(name, Some("/usr/sbin:/usr/bin:/sbin:/bin"), "/"))
        .ok()
}

/// A kernel to boot the guest with, and its modules.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GuestKernel {
    /// `<root>/boot/vmlinuz-<ver>`.
    pub image: PathBuf,
    pub version: String,
    /// `<root>/lib/modules/<ver>`.
    pub modules_dir: PathBuf,
}

/// Where `cargo xtask setup` unpacks Debian's kernel package for the guest (never installed
/// on the host): `$NETSHIM_GUEST_KERNEL_DIR` (`cargo xtask test` sets it), else
/// `$CARGO_HOME/../.cache/netshim/guest-kernel` (`~/.cargo` without CARGO_HOME).
pub fn guest_kernel_dirs() -> Vec<PathBuf> {
    let mut dirs = Vec::new();
    if let Some(d) = std::env::var_os("NETSHIM_GUEST_KERNEL_DIR").filter(|d| !d.is_empty()) {
        dirs.push(PathBuf::from(d));
    }
    let cargo_home = std::env::var_os("CARGO_HOME")
        .filter(|d| !d.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cargo")));
    if let Some(home) = cargo_home {
        dirs.push(home.join("../.cache/netshim/guest-kernel"));
    }
    dirs
}

/// The newest `<root>/boot/vmlinuz-<ver>` that has `<root>/lib/modules/<ver>`, else the
/// newest one at all.
fn kernel_under(root: &Path) -> Option<GuestKernel> {
    let mut found: Vec<(bool, Vec<u64>, String)> = std::fs::read_dir(root.join("boot"))
        .ok()?
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            let ver = name.strip_prefix("vmlinuz-")?.to_owned();
            let has_modules = root.join("lib/modules").join(&ver).is_dir();
            let key = ver
                .split(|c: char| !c.is_ascii_digit())
                .filter_map(|n| n.parse().ok())
                .collect();
            Some((has_modules, key, ver))
        })
        .collect();
    found.sort();
    let (_, _, version) = found.pop()?;
    Some(GuestKernel {
        image: root.join("boot").join(format!("vmlinuz-{version}")),
        modules_dir: root.join("lib/modules").join(&version),
        version,
    })
}

/// The guest's kernel: the one `cargo xtask setup` unpacked ([`guest_kernel_dirs`]), else
/// the host's newest `/boot/vmlinuz-<ver>`.
pub fn find_kernel() -> Result<GuestKernel, String> {
    let mut roots = guest_kernel_dirs();
    roots.push(PathBuf::from("/"));
    roots.iter().find_map(|r| kernel_under(r)).ok_or_else(|| {
        let looked: Vec<String> = roots
            .iter()
            .map(|r| r.join("boot").display().to_string())
            .collect();
        format!(
            "no vmlinuz-* in {} (cargo xtask setup --for test unpacks one)",
            looked.join(", ")
        )
    })
}

/// `/bin/busybox` (or `/usr/bin/busybox`), if it is statically linked (no PT_INTERP).
pub fn find_static_busybox() -> Result<PathBuf, String> {
    let path = ["/bin/busybox", "/usr/bin/busybox"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.is_file())
        .ok_or("no busybox (cargo xtask setup --for test installs busybox-static)")?;
    let elf = std::fs::read(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    if is_static_elf64(&elf) {
        Ok(path)
    } else {
        Err(format!(
            "{} is not a static x86-64 ELF (cargo xtask setup --for test installs busybox-static)",
            path.display()
        ))
    }
}

fn is_static_elf64(elf: &[u8]) -> bool {
    const PT_INTERP: u32 = 3;
    if elf.len() < 64 || &elf[..4] != b"\x7fELF" || elf[4] != 2 || elf[5] != 1 {
        return false;
    }
    let u16_at = |o: usize| u16::from_le_bytes([elf[o], elf[o + 1]]) as usize;
    let phoff = u64::from_le_bytes(elf[0x20..0x28].try_into().unwrap()) as usize;
    let (phentsize, phnum) = (u16_at(0x36), u16_at(0x38));
    (0..phnum).all(|i| {
        let o = phoff + i * phentsize;
        elf.get(o..o + 4)
            .map(|t| u32::from_le_bytes(t.try_into().unwrap()) != PT_INTERP)
            .unwrap_or(false)
    })
}

/// How QEMU gets its tap.
#[derive(Debug)]
pub enum NetdevSpec {
    /// `-netdev tap,ifname=NAME,script=no,downscript=no` (the tap exists in QEMU's netns;
    /// netshim's `tap<N>_kata`).
    TapIfname(String),
    /// An open tap/macvtap queue (e.g. `/dev/tap<ifindex>`), passed to QEMU as fd 3:
    /// `-netdev tap,fd=3`.
    TapFd { fd: OwnedFd },
}

/// Console output of a running QEMU, filled by reader threads.
#[derive(Default)]
struct Console {
    state: Mutex<ConsoleState>,
    changed: Condvar,
}

#[derive(Default)]
struct ConsoleState {
    stdout: Vec<u8>,
    stderr: Vec<u8>,
    open_streams: u32,
}

/// A running QEMU; killed (and its temp dir removed) on Drop.
pub struct QemuGuard {
    // Field order = drop order: kill QEMU, then join the readers, then remove the files.
    child: ChildGuard,
    readers: Vec<JoinHandle<()>>,
    console: Arc<Console>,
    started: Instant,
    _dir: Option<tempfile::TempDir>,
}

impl fmt::Debug for QemuGuard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("QemuGuard")
            .field("pid", &self.child.id())
            .finish()
    }
}

/// QEMU launcher.
pub struct Qemu;

impl Qemu {
    /// Starts `qemu-system-x86_64 -accel tcg` inside `netns` (`ip netns exec`) with
    /// `kernel`/`initrd` and one virtio-net NIC with `mac` on `netdev`. The serial console
    /// is captured; see [`QemuGuard::wait_for`].
    pub fn start_in_netns(
        netns: &TestNetns,
        kernel: &Path,
        initrd: &Path,
        netdev: NetdevSpec,
        mac: &str,
    ) -> io::Result<QemuGuard> {
        let qemu = which("qemu-system-x86_64").ok_or_else(|| {
            io::Error::new(io::ErrorKind::NotFound, "qemu-system-x86_64 not found")
        })?;
        let (netdev_arg, fd) = match netdev {
            NetdevSpec::TapIfname(name) => (
                format!("tap,id=n0,ifname={name},script=no,downscript=no,vhost=off"),
                None,
            ),
            NetdevSpec::TapFd { fd } => ("tap,id=n0,fd=3,vhost=off".to_owned(), Some(fd)),
        };
        let kernel = kernel.to_string_lossy();
        let initrd = initrd.to_string_lossy();
        let device = format!("virtio-net-pci,netdev=n0,mac={mac},romfile=");
        let args: Vec<&str> = vec![
            qemu.to_str().unwrap_or("qemu-system-x86_64"),
            "-accel",
            "tcg",
            "-m",
            "256",
            "-nographic",
            "-no-reboot",
            "-kernel",
            &kernel,
            "-initrd",
            &initrd,
            "-append",
            "console=ttyS0 panic=-1 quiet",
            "-netdev",
            &netdev_arg,
            "-device",
            &device,
        ];
        let mut cmd = netns.exec_cmd(&args);
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        if let Some(fd) = &fd {
            let raw = fd.as_raw_fd();
            // SAFETY: only async-signal-safe calls (dup2, fcntl) between fork and exec.
            unsafe {
                cmd.pre_exec(move || {
                    if raw == 3 {
                        // dup2 onto itself keeps FD_CLOEXEC: clear it.
                        let flags = libc::fcntl(3, libc::F_GETFD);
                        if flags < 0 || libc::fcntl(3, libc::F_SETFD, flags & !libc::FD_CLOEXEC) < 0
                        {
                            return Err(io::Error::last_os_error());
                        }
                    } else if libc::dup2(raw, 3) < 0 {
                        return Err(io::Error::last_os_error());
                    }
                    Ok(())
                });
            }
        }
        let child = cmd.spawn()?;
        // QEMU holds its own copy now.
        drop(fd);
        let mut child = ChildGuard::new(child, &format!("qemu in {}", netns.name()));
        let console = Arc::new(Console::default());
        let stdout = child.child_mut().stdout.take().expect("stdout piped");
        let stderr = child.child_mut().stderr.take().expect("stderr piped");
        console.state.lock().unwrap().open_streams = 2;
        let readers = vec![
            spawn_reader(stdout, console.clone(), false),
            spawn_reader(stderr, console.clone(), true),
        ];
        Ok(QemuGuard {
            child,
            readers,
            console,
            started: Instant::now(),
            _dir: None,
        })
    }

    /// Boots the test guest in `netns` with `config` (first NIC's MAC on `netdev`): writes
    /// base initramfs + `config` into a temp dir the guard owns and removes.
    pub fn boot(
        assets: &GuestAssets,
        netns: &TestNetns,
        config: &GuestConfig,
        netdev: NetdevSpec,
    ) -> io::Result<QemuGuard> {
        let nic = config
            .nics
            .first()
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "no NIC in config"))?;
        let dir = tempfile::Builder::new().prefix("netshim-qemu-").tempdir()?;
        let initrd = dir.path().join("initrd.img");
        assets.write_initrd(config, &initrd)?;
        let mut guard = Self::start_in_netns(netns, &assets.kernel, &initrd, netdev, &nic.mac)?;
        guard._dir = Some(dir);
        Ok(guard)
    }
}

fn spawn_reader(
    mut pipe: impl Read + Send + 'static,
    console: Arc<Console>,
    is_stderr: bool,
) -> JoinHandle<()> {
    std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        loop {
            match pipe.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    let mut st = console.state.lock().unwrap();
                    let out = if is_stderr {
                        &mut st.stderr
                    } else {
                        &mut st.stdout
                    };
                    out.extend_from_slice(&buf[..n]);
                    console.changed.notify_all();
                }
            }
        }
        console.state.lock().unwrap().open_streams -= 1;
        console.changed.notify_all();
    })
}

impl QemuGuard {
    /// QEMU's pid.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// When QEMU was started.
    pub fn started(&self) -> Instant {
        self.started
    }

    /// The serial console so far (`\r` removed).
    pub fn console(&self) -> String {
        let st = self.console.state.lock().unwrap();
        String::from_utf8_lossy(&st.stdout).replace('\r', "")
    }

    /// What QEMU printed on stderr so far.
    pub fn stderr(&self) -> String {
        let st = self.console.state.lock().unwrap();
        String::from_utf8_lossy(&st.stderr).into_owned()
    }

    /// The first console line containing `pattern`, if any.
    pub fn console_line(&self, pattern: &str) -> Option<String> {
        self.console()
            .lines()
            .find(|l| l.contains(pattern))
            .map(str::to_owned)
    }

    /// Waits until the console shows `pattern`; returns the time since QEMU started. On
    /// timeout or QEMU's exit, the error names the reason and holds console and stderr.
    pub fn wait_for(&self, pattern: &str, timeout: Duration) -> Result<Duration, String> {
        self.wait_for_any(&[pattern], timeout).map(|(_, t)| t)
    }

    /// Waits until the console shows one of `patterns`; returns which (index) and the time
    /// since QEMU started.
    pub fn wait_for_any(
        &self,
        patterns: &[&str],
        timeout: Duration,
    ) -> Result<(usize, Duration), String> {
        let deadline = Instant::now() + timeout;
        let mut st = self.console.state.lock().unwrap();
        loop {
            // Complete lines only, so that the caller's `console_line` sees the whole line.
            let end = st.stdout.iter().rposition(|b| *b == b'\n').unwrap_or(0);
            let text = String::from_utf8_lossy(&st.stdout[..end]);
            if let Some(i) = patterns.iter().position(|p| text.contains(p)) {
                return Ok((i, self.started.elapsed()));
            }
            let why = if st.open_streams == 0 {
                "QEMU exited".to_owned()
            } else if Instant::now() >= deadline {
                format!("timed out after {timeout:?}")
            } else {
                let left = deadline.saturating_duration_since(Instant::now());
                st = self.console.changed.wait_timeout(st, left).unwrap().0;
                continue;
            };
            return Err(format!(
                "waiting for {patterns:?}: {why}\n--- console ---\n{}\n--- qemu stderr ---\n{}",
                String::from_utf8_lossy(&st.stdout).replace('\r', ""),
                String::from_utf8_lossy(&st.stderr)
            ));
        }
    }

    /// Kills QEMU and returns the whole console output.
    pub fn kill(self) -> String {
        let console = self.console.clone();
        drop(self);
        let st = console.state.lock().unwrap();
        String::from_utf8_lossy(&st.stdout).replace('\r', "")
    }
}

impl Drop for QemuGuard {
    fn drop(&mut self) {
        let _ = self.child.signal(nix::sys::signal::Signal::SIGKILL);
        let _ = self.child.child_mut().wait();
        for r in self.readers.drain(..) {
            let _ = r.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn report() -> Value {
        json!({
            "endpoints": [{
                "index": 0, "name": "eth0", "kind": "veth", "mac": "62:2C:21:40:C1:75",
                "mtu": 1450, "guest_ifname": "eth0",
                "addresses": [{"address": "10.1.0.2", "prefix_len": 24},
                              {"address": "fd00::2", "prefix_len": 64},
                              {"address": "fe80::602c:21ff:fe40:c175", "prefix_len": 64}],
                "routes": [
                    {"destination": "default", "gateway": "169.254.1.1", "mtu": null},
                    {"destination": "169.254.1.1/32", "gateway": null},
                    {"destination": "10.9.0.0/16", "gateway": "10.1.0.1", "mtu": 1400,
                     "source": "10.1.0.2", "scope": "universe"}
                ],
                "neighbors": [{"address": "169.254.1.1", "mac": "ee:ee:ee:ee:ee:ee"}]
            }]
        })
    }

    #[test]
    fn config_from_attach_json() {
        let c = GuestNetConfig::from_attach_json(&report(), 0).unwrap();
        assert_eq!(c.mac, "62:2c:21:40:c1:75");
        assert_eq!(c.mtu, 1450);
        assert_eq!(c.ifname, "eth0");
        assert_eq!(c.primary_ip(), Some("10.1.0.2".parse().unwrap()));
        assert_eq!(c.addresses.len(), 3);
        assert_eq!(c.routes.len(), 3);
        assert_eq!(c.neighbors.len(), 1);
        let routes = c.shell_routes();
        let lines: Vec<&str> = routes.lines().collect();
        // Gateway-less (link) route first, so the default route's gateway is reachable.
        assert_eq!(
            lines,
            [
                "run ip route replace 169.254.1.1/32 dev eth0",
                "run ip route replace default via 169.254.1.1 dev eth0",
                "run ip route replace 10.9.0.0/16 via 10.1.0.1 dev eth0 src 10.1.0.2 mtu 1400",
                "run arp -i eth0 -s 169.254.1.1 ee:ee:ee:ee:ee:ee",
            ]
        );
        let link = c.shell_link();
        assert!(
            link.contains("run ip addr add fd00::2/64 dev eth0\n"),
            "{link}"
        );
        // The link-local address is the guest kernel's; the NIC waits for IPv6 DAD.
        assert!(!link.contains("run ip addr add fe80"), "{link}");
        assert!(link.contains("V6_NICS=\"$V6_NICS eth0\"\n"), "{link}");
        // Routes and neighbours are optional.
        let mut r = report();
        r["endpoints"][0].as_object_mut().unwrap().remove("routes");
        r["endpoints"][0]
            .as_object_mut()
            .unwrap()
            .remove("neighbors");
        let c = GuestNetConfig::from_attach_json(&r, 0).unwrap();
        assert!(c.routes.is_empty() && c.neighbors.is_empty());
        assert!(GuestNetConfig::from_attach_json(&r, 1).is_err());
    }

    /// The names read are the ones netshim's types serialize: a route, a neighbour and an
    /// address as netshim writes them into the attach report read back whole.
    #[test]
    fn reads_the_fields_netshims_types_write() {
        use netshim::{
            guest_info::{GuestNeighbor, GuestRoute},
            interfaces::{IfAddr, Mac},
        };
        let route = GuestRoute {
            destination: "10.9.0.0/16".into(),
            gateway: Some("10.1.0.1".parse().unwrap()),
            source: Some("10.1.0.2".parse().unwrap()),
            scope: "universe".into(),
            mtu: Some(1400),
        };
        let neighbor = GuestNeighbor {
            address: "169.254.1.1".parse().unwrap(),
            mac: Mac([0xee; 6]),
            state: "permanent".into(),
        };
        let address = IfAddr {
            address: "10.1.0.2".parse().unwrap(),
            prefix_len: 24,
        };
        let mut r = report();
        r["endpoints"][0]["routes"] = json!([route]);
        r["endpoints"][0]["neighbors"] = json!([neighbor]);
        r["endpoints"][0]["addresses"] = json!([address]);
        let c = GuestNetConfig::from_attach_json(&r, 0).unwrap();
        assert_eq!(
            c.routes,
            [Route {
                dest: "10.9.0.0/16".into(),
                gateway: route.gateway,
                mtu: Some(1400),
                source: route.source,
            }]
        );
        assert_eq!(
            c.neighbors,
            [(neighbor.address, String::from("ee:ee:ee:ee:ee:ee"))]
        );
        assert_eq!(c.addresses, [(address.address, 24)]);
    }

    #[test]
    fn newc_layout() {
        let mut fs = Initramfs::new();
        fs.file("etc/a/b", b"hello".to_vec(), 0o644);
        fs.symlink("bin/sh", "busybox");
        let raw = fs.to_newc();
        assert_eq!(raw.len() % 4, 0);
        let text = String::from_utf8_lossy(&raw);
        // Parents come before their children.
        let pos = |s: &str| text.find(&format!("{s}\0")).unwrap();
        assert!(pos("etc") < pos("etc/a") && pos("etc/a") < pos("etc/a/b"));
        assert!(text.contains("hello") && text.contains("TRAILER!!!\0"));
        assert_eq!(&raw[..6], b"070701");
    }
}
