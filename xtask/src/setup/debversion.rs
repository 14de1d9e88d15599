//! Debian version ordering (`[epoch:]upstream[-revision]`), as `dpkg --compare-versions`
//! orders them (dpkg's `verrevcmp`), so that setup's QEMU decision is a pure function that
//! unit tests can check. No crate for it is in the dependency tree; it is 40 lines.

use std::cmp::Ordering;

/// Splits `[epoch:]upstream[-revision]`.
fn parts(v: &str) -> (u64, &str, &str) {
    let (epoch, rest) = match v.split_once(':') {
        Some((e, rest)) if e.bytes().all(|b| b.is_ascii_digit()) => (e.parse().unwrap_or(0), rest),
        _ => (0, v),
    };
    match rest.rsplit_once('-') {
        Some((upstream, revision)) => (epoch, upstream, revision),
        None => (epoch, rest, ""),
    }
}

/// dpkg's character weight: `~` sorts before everything (even the end), letters before
/// other characters.
fn weight(c: Option<u8>) -> i32 {
    match c {
        None => 0,
        Some(b'~') => -1,
        Some(c) if c.is_ascii_digit() => 0,
        Some(c) if c.is_ascii_alphabetic() => i32::from(c),
        Some(c) => i32::from(c) + 256,
    }
}

fn verrevcmp(a: &str, b: &str) -> Ordering {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    let (mut i, mut j) = (0, 0);
    let digit = |s: &[u8], k: usize| s.get(k).is_some_and(u8::is_ascii_digit);
    while i < a.len() || j < b.len() {
        while (i < a.len() && !digit(a, i)) || (j < b.len() && !digit(b, j)) {
            let (wa, wb) = (weight(a.get(i).copied()), weight(b.get(j).copied()));
            if wa != wb {
                return wa.cmp(&wb);
            }
            i += 1;
            j += 1;
        }
        while a.get(i) == Some(&b'0') {
            i += 1;
        }
        while b.get(j) == Some(&b'0') {
            j += 1;
        }
        let mut first_diff = Ordering::Equal;
        while digit(a, i) && digit(b, j) {
            if first_diff == Ordering::Equal {
                first_diff = a[i].cmp(&b[j]);
            }
            i += 1;
            j += 1;
        }
        if digit(a, i) {
            return Ordering::Greater;
        }
        if digit(b, j) {
            return Ordering::Less;
        }
        if first_diff != Ordering::Equal {
            return first_diff;
        }
    }
    Ordering::Equal
}

/// Orders two Debian versions.
pub fn cmp(a: &str, b: &str) -> Ordering {
    let (ea, ua, ra) = parts(a);
    let (eb, ub, rb) = parts(b);
    ea.cmp(&eb)
        .then_with(|| verrevcmp(ua, ub))
        .then_with(|| verrevcmp(ra, rb))
}

#[cfg(test)]
mod tests {
    use super::*;

    const PAIRS: &[(&str, &str, Ordering)] = &[
        // The machine family's QEMU from backports against bookworm's.
        (
            "1:10.0.2+ds-2+deb13u1~bpo12+1",
            "1:7.2+dfsg-7+deb12u18+b3",
            Ordering::Greater,
        ),
        (
            "1:7.2+dfsg-7+deb12u18+b3",
            "1:7.2+dfsg-7+deb12u15",
            Ordering::Greater,
        ),
        (
            "1:10.0.2+ds-2+deb13u1~bpo12+1",
            "1:10.0.2+ds-2+deb13u1",
            Ordering::Less,
        ),
        ("1:10.0.2+ds-2", "1:10.0.2+ds-2", Ordering::Equal),
        ("1:1.0", "9.9", Ordering::Greater),
        ("1.0~rc1", "1.0", Ordering::Less),
        ("1.0", "1.0+b1", Ordering::Less),
        ("1.0a", "1.0+", Ordering::Less),
        ("1.01", "1.1", Ordering::Equal),
        ("2.10", "2.9", Ordering::Greater),
        ("6.1.192-3", "6.1.176-1", Ordering::Greater),
    ];

    #[test]
    fn orders_as_dpkg_does() {
        for (a, b, want) in PAIRS {
            assert_eq!(cmp(a, b), *want, "{a} vs {b}");
            assert_eq!(cmp(b, a), want.reverse(), "{b} vs {a}");
        }
    }

    /// The same pairs through `dpkg --compare-versions`, where dpkg is installed.
    #[test]
    fn agrees_with_dpkg() {
        if crate::cmd::which("dpkg").is_none() {
            eprintln!("skipping: no dpkg");
            return;
        }
        for (a, b, want) in PAIRS {
            let op = match want {
                Ordering::Less => "lt",
                Ordering::Equal => "eq",
                Ordering::Greater => "gt",
            };
            let ok = std::process::Command::new("dpkg")
                .args(["--compare-versions", a, op, b])
                .status()
                .unwrap()
                .success();
            assert!(ok, "dpkg says {a} is not {op} {b}");
        }
    }
}
