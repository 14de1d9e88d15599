//! Answers about an interface that netlink does not give: ethtool driver info and
//! vhost-user sockets. A trait so that classification is unit-testable without devices.

use std::{
    io,
    os::unix::fs::FileTypeExt,
    path::{Path, PathBuf},
};

use crate::interfaces::Interface;

/// kata's default directory for vhost-user sockets: `<dir>/vhostuser_<IP>/vhu.sock`.
pub const DEFAULT_VHOST_USER_DIR: &str = "/tmp";

pub trait Probe {
    /// ethtool's (driver, bus_info) of `ifname` (ETHTOOL_GDRVINFO).
    fn drvinfo(&self, ifname: &str) -> io::Result<(String, String)>;
    /// The vhost-user socket for one of the interface's addresses, if one exists.
    fn vhost_user_socket(&self, iface: &Interface) -> Option<PathBuf>;
}

/// The real probe: ioctls in the calling thread's netns and the filesystem.
#[derive(Debug, Clone)]
pub struct SystemProbe {
    pub vhost_user_dir: PathBuf,
}

impl Default for SystemProbe {
    fn default() -> Self {
        Self {
            vhost_user_dir: PathBuf::from(DEFAULT_VHOST_USER_DIR),
        }
    }
}

/// Where kata looks for the vhost-user socket of address `ip`.
pub fn vhost_user_socket_path(dir: &Path, ip: &std::net::IpAddr) -> PathBuf {
    dir.join(format!("vhostuser_{ip}")).join("vhu.sock")
}

impl Probe for SystemProbe {
    fn drvinfo(&self, ifname: &str) -> io::Result<(String, String)> {
        crate::tap::ethtool_drvinfo(ifname)
    }

    fn vhost_user_socket(&self, iface: &Interface) -> Option<PathBuf> {
        iface.addresses.iter().find_map(|a| {
            let path = vhost_user_socket_path(&self.vhost_user_dir, &a.address);
            let meta = std::fs::metadata(&path).ok()?;
            meta.file_type().is_socket().then_some(path)
        })
    }
}
