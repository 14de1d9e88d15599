//! The privileges netshim's commands need, read from `CapEff` in `/proc/self/status`.
//!
//! Every command that looks at sandboxes enters network namespaces (`setns`: CAP_SYS_ADMIN,
//! which also mounts bpffs and joins the host's mount namespace), talks rtnetlink and makes
//! taps (CAP_NET_ADMIN), calls bpf(2) (CAP_BPF), reads and writes netshim's root-only 0700
//! directories `/sys/fs/bpf/netshim` and `/run/netshim` (CAP_DAC_OVERRIDE, for a user other
//! than their owner) and looks at PID 1's namespaces and other processes' (`/proc/1/ns/mnt`,
//! gc's scan: CAP_SYS_PTRACE). Without them a command would see an empty bpffs directory
//! and report "nothing attached" (exit 0): it is refused up front instead.

/// A capability netshim needs: (bit number in CapEff, name).
pub type Capability = (u32, &'static str);

pub const CAP_DAC_OVERRIDE: Capability = (1, "CAP_DAC_OVERRIDE");
pub const CAP_NET_ADMIN: Capability = (12, "CAP_NET_ADMIN");
pub const CAP_SYS_PTRACE: Capability = (19, "CAP_SYS_PTRACE");
pub const CAP_SYS_ADMIN: Capability = (21, "CAP_SYS_ADMIN");
pub const CAP_BPF: Capability = (39, "CAP_BPF");

/// What every privileged command needs.
pub const REQUIRED: [Capability; 5] = [
    CAP_BPF,
    CAP_NET_ADMIN,
    CAP_SYS_ADMIN,
    CAP_DAC_OVERRIDE,
    CAP_SYS_PTRACE,
];

/// The effective capability set of this process (`CapEff:` of /proc/self/status).
pub fn effective() -> std::io::Result<u64> {
    let status = std::fs::read_to_string("/proc/self/status")?;
    parse_cap_eff(&status).ok_or_else(|| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            "no CapEff line in /proc/self/status",
        )
    })
}

/// The `CapEff:` value of a `/proc/<pid>/status` text.
pub fn parse_cap_eff(status: &str) -> Option<u64> {
    let hex = status.lines().find_map(|l| l.strip_prefix("CapEff:"))?;
    u64::from_str_radix(hex.trim(), 16).ok()
}

/// The capabilities of [`REQUIRED`] that `cap_eff` lacks.
pub fn missing(cap_eff: u64) -> Vec<&'static str> {
    REQUIRED
        .iter()
        .filter(|(bit, _)| cap_eff & (1u64 << bit) == 0)
        .map(|(_, name)| *name)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cap_eff_parses_and_missing_ones_are_named() {
        let root = "Name:\tnetshim\nCapInh:\t0000000000000000\nCapEff:\t000001ffffffffff\n";
        assert_eq!(parse_cap_eff(root), Some(0x1ff_ffff_ffff));
        assert!(missing(0x1ff_ffff_ffff).is_empty());
        assert_eq!(missing(0).len(), REQUIRED.len());
        let some = (1 << CAP_BPF.0) | (1 << CAP_NET_ADMIN.0);
        assert_eq!(
            missing(some),
            vec!["CAP_SYS_ADMIN", "CAP_DAC_OVERRIDE", "CAP_SYS_PTRACE"]
        );
        assert_eq!(parse_cap_eff("CapEff:\tzz\n"), None);
        assert_eq!(parse_cap_eff("Name:\tx\n"), None);
    }
}
