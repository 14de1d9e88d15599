//! kata's tap naming: endpoint N gets `tap<N>_kata`; its virtual interface in the guest is
//! `eth<N>`.

/// Longest interface name Linux accepts (IFNAMSIZ - 1).
pub const MAX_IFNAME_LEN: usize = 15;

/// The tap of endpoint `index`.
pub fn tap_for(index: u32) -> String {
    format!("tap{index}_kata")
}

/// Checks a name given for a tap in place of `tap<N>_kata` (the CNI key `tap_name`): a
/// valid Linux interface name (1-15 bytes, no '/', ':', NUL or whitespace, not "." or
/// ".."), and not in kata's `tap<N>_kata` pattern, which belongs to the endpoint of that
/// index.
pub fn validate_custom(name: &str) -> Result<(), String> {
    crate::tap::validate_name(name).map_err(|e| e.to_string())?;
    if parse(name).is_some() {
        return Err(format!(
            "tap name {name:?} is kata's name of endpoint {}'s tap; give another name",
            parse(name).unwrap_or_default()
        ));
    }
    Ok(())
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
    fn custom_names_must_be_interface_names_outside_katas_pattern() {
        for ok in ["vmtap0", "a", "fc-tap.1", "x234567890abcde"] {
            assert_eq!(validate_custom(ok), Ok(()), "{ok}");
        }
        for (bad, why) in [
            ("", "empty"),
            ("x234567890abcdef", "15 bytes"),
            (".", "'.'"),
            ("..", "'.'"),
            ("a/b", "'/'"),
            ("a:b", "':'"),
            ("a b", "whitespace"),
            ("tap%d", "'%'"),
            ("tap0_kata", "kata's name of endpoint 0"),
            ("tap12_kata", "endpoint 12"),
        ] {
            let err = validate_custom(bad).expect_err(bad);
            assert!(err.contains(why), "{bad:?}: {err}");
        }
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
