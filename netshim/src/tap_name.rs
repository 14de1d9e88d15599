//! kata's tap naming: endpoint N gets `tap<N>_kata`; its virtual interface in the guest is
//! `eth<N>`.

/// Longest interface name Linux accepts (IFNAMSIZ - 1).
pub const MAX_IFNAME_LEN: usize = 15;

/// The tap of endpoint `index`.
pub fn tap_for(index: u32) -> String {
    format!("tap{index}_kata")
}

/// The guest-side interface name of endpoint `index`.
pub fn guest_ifname_for(index: u32) -> String {
    format!("eth{index}")
}

/// The endpoint index of a `tap<N>_kata` name.
pub fn parse(name: &str) -> Option<u32> {
    let digits = name.strip_prefix("tap")?.strip_suffix("_kata")?;
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    if digits.len() > 1 && digits.starts_with('0') {
        return None;
    }
    digits.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for i in [0, 1, 9, 31, 12345] {
            assert_eq!(parse(&tap_for(i)), Some(i));
            assert!(tap_for(i).len() <= MAX_IFNAME_LEN);
        }
        assert_eq!(guest_ifname_for(3), "eth3");
    }

    #[test]
    fn other_names_are_not_kata_taps() {
        for name in [
            "tap_kata",
            "tapx_kata",
            "tap0",
            "tap00_kata",
            "eth0",
            "tap-1_kata",
            "",
        ] {
            assert_eq!(parse(name), None, "{name}");
        }
    }
}
