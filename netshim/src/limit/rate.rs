//! Rates and bursts as operators write them, and the bounds netshim accepts.
//!
//! A rate is bits per second: a plain integer (kata's `rx_rate_limiter_max_rate` is one), or
//! a number with an SI suffix `k`, `M`, `G`, `T` (×1000), optionally followed by `bit` or
//! `bit/s` (`100M`, `1gbit`, `2.5Gbit/s`). `0` means unlimited. A burst is bytes: a plain
//! integer, or with `k`/`KiB`/`kb` (×1024) or `m`/`MiB`/`mb` (×1024²). Byte rates (`bps`,
//! `B/s`) are refused: tc reads `bps` as bytes per second and everyone else as bits.

/// Slowest rate accepted: below 8 kbit/s one 1500-byte frame takes longer than 1.5 s.
pub const MIN_RATE_BPS: u64 = 8_000;
/// Fastest rate accepted: 1 Tbit/s, far above anything a tap carries.
pub const MAX_RATE_BPS: u64 = 1_000_000_000_000;
/// Smallest burst: one full Ethernet frame and its headroom.
pub const MIN_BURST_BYTES: u64 = 1_600;
/// Largest burst: 256 MiB.
pub const MAX_BURST_BYTES: u64 = 256 << 20;
/// Longest time a burst may stand for at its rate (burst / rate): a longer one is no limit.
pub const MAX_BURST_SECONDS: u64 = 10;

/// Why a rate or burst text was refused; the caller names the key or flag.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum RateError {
    #[error("{0:?} is not a number of bits per second (examples: 100000000, 100M, 1Gbit)")]
    NotARate(String),
    #[error(
        "{0:?} is a byte rate: give bits per second (100Mbit, not 12.5MB/s; tc's \"bps\" means \
         bytes)"
    )]
    ByteRate(String),
    #[error("{0:?} is negative: give 0 (unlimited) or a rate in bits per second")]
    Negative(String),
    #[error(
        "{text:?} ({bps} bit/s) is below {MIN_RATE_BPS} bit/s: a limit that slow delays one \
         frame by seconds; give 0 for no limit"
    )]
    TooSlow { text: String, bps: u64 },
    #[error("{0:?} is above {MAX_RATE_BPS} bit/s (1 Tbit/s): give 0 for no limit")]
    TooFast(String),
    #[error("{0:?} is not a number of bytes (examples: 65536, 64k, 1MiB)")]
    NotABurst(String),
    #[error("{text:?} is outside {MIN_BURST_BYTES}..={MAX_BURST_BYTES} bytes")]
    BurstOutOfRange { text: String },
    #[error(
        "a burst of {burst} bytes lasts {seconds:.1} s at {rate} bit/s, more than \
         {MAX_BURST_SECONDS} s: it would not limit anything; give a smaller burst"
    )]
    BurstTooLong { burst: u64, rate: u64, seconds: f64 },
    #[error("a burst without a rate: set the rate of the same direction too")]
    BurstWithoutRate,
}

/// Reads a rate in bits per second (see the module docs); `0` = unlimited.
pub fn parse_rate(text: &str) -> Result<u64, RateError> {
    let t = text.trim();
    if t.starts_with('-') {
        return Err(RateError::Negative(text.to_owned()));
    }
    let lower = t.to_ascii_lowercase();
    if lower.ends_with("bps") || lower.ends_with("b/s") && !lower.ends_with("bit/s") {
        return Err(RateError::ByteRate(text.to_owned()));
    }
    let unitless = lower
        .strip_suffix("bit/s")
        .or_else(|| lower.strip_suffix("bit"))
        .unwrap_or(&lower);
    let (number, scale) = match unitless.char_indices().last() {
        Some((i, 'k')) => (&unitless[..i], 1e3),
        Some((i, 'm')) => (&unitless[..i], 1e6),
        Some((i, 'g')) => (&unitless[..i], 1e9),
        Some((i, 't')) => (&unitless[..i], 1e12),
        _ => (unitless, 1.0),
    };
    let bps = scaled(number, scale).ok_or_else(|| RateError::NotARate(text.to_owned()))?;
    check_rate(bps, text)
}

/// A rate given as an integer (TOML, JSON): `0` = unlimited, negative refused.
pub fn rate_from_integer(n: i64) -> Result<u64, RateError> {
    let text = n.to_string();
    let bps = u64::try_from(n).map_err(|_| RateError::Negative(text.clone()))?;
    check_rate(bps, &text)
}

fn check_rate(bps: u64, text: &str) -> Result<u64, RateError> {
    match bps {
        0 => Ok(0),
        b if b < MIN_RATE_BPS => Err(RateError::TooSlow {
            text: text.to_owned(),
            bps: b,
        }),
        b if b > MAX_RATE_BPS => Err(RateError::TooFast(text.to_owned())),
        b => Ok(b),
    }
}

/// Reads a burst in bytes (see the module docs).
pub fn parse_burst(text: &str) -> Result<u64, RateError> {
    let t = text.trim();
    let lower = t.to_ascii_lowercase();
    let (number, scale) = [
        ("kib", 1024.0),
        ("kb", 1024.0),
        ("k", 1024.0),
        ("mib", 1048576.0),
        ("mb", 1048576.0),
        ("m", 1048576.0),
        ("b", 1.0),
    ]
    .iter()
    .find_map(|(suffix, scale)| lower.strip_suffix(suffix).map(|n| (n, *scale)))
    .unwrap_or((&lower, 1.0));
    if number.trim_start().starts_with('-') {
        return Err(RateError::BurstOutOfRange {
            text: text.to_owned(),
        });
    }
    let bytes = scaled(number, scale).ok_or_else(|| RateError::NotABurst(text.to_owned()))?;
    check_burst(bytes, text)
}

/// A burst given as an integer (TOML, JSON).
pub fn burst_from_integer(n: i64) -> Result<u64, RateError> {
    let text = n.to_string();
    let bytes = u64::try_from(n).map_err(|_| RateError::BurstOutOfRange { text: text.clone() })?;
    check_burst(bytes, &text)
}

fn check_burst(bytes: u64, text: &str) -> Result<u64, RateError> {
    if (MIN_BURST_BYTES..=MAX_BURST_BYTES).contains(&bytes) {
        Ok(bytes)
    } else {
        Err(RateError::BurstOutOfRange {
            text: text.to_owned(),
        })
    }
}

/// A burst must not outlast [`MAX_BURST_SECONDS`] at its rate.
pub fn check_burst_for_rate(burst: u64, rate: u64) -> Result<(), RateError> {
    let seconds = burst as f64 * 8.0 / rate as f64;
    if seconds > MAX_BURST_SECONDS as f64 {
        return Err(RateError::BurstTooLong {
            burst,
            rate,
            seconds,
        });
    }
    Ok(())
}

/// `number` (decimal, maybe with a fraction) × `scale`, as a whole number; `None` when it is
/// not a finite non-negative number or does not fit.
fn scaled(number: &str, scale: f64) -> Option<u64> {
    let n = number.trim();
    if n.is_empty() || !n.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
        return None;
    }
    if scale == 1.0 {
        return n.parse::<u64>().ok();
    }
    let v: f64 = n.parse().ok()?;
    let out = (v * scale).round();
    (out.is_finite() && out >= 0.0 && out < u64::MAX as f64).then_some(out as u64)
}

/// `bps` as a short text: `100Mbit/s`, `1.5Gbit/s`, `8000bit/s`.
pub fn display_rate(bps: u64) -> String {
    for (scale, unit) in [(1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")] {
        if bps as f64 >= scale {
            let v = bps as f64 / scale;
            let text = format!("{v:.3}");
            let text = text.trim_end_matches('0').trim_end_matches('.');
            return format!("{text}{unit}bit/s");
        }
    }
    format!("{bps}bit/s")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_read_as_bits_per_second() {
        assert_eq!(parse_rate("0"), Ok(0));
        assert_eq!(parse_rate("100000000"), Ok(100_000_000));
        assert_eq!(parse_rate("100M"), Ok(100_000_000));
        assert_eq!(parse_rate("100mbit"), Ok(100_000_000));
        assert_eq!(parse_rate("1Gbit/s"), Ok(1_000_000_000));
        assert_eq!(parse_rate("2.5G"), Ok(2_500_000_000));
        assert_eq!(parse_rate("64k"), Ok(64_000));
        assert_eq!(parse_rate("1T"), Ok(MAX_RATE_BPS));
    }

    #[test]
    fn bad_rates_say_why() {
        assert!(matches!(parse_rate("-5"), Err(RateError::Negative(_))));
        assert!(matches!(parse_rate("fast"), Err(RateError::NotARate(_))));
        assert!(matches!(parse_rate(""), Err(RateError::NotARate(_))));
        assert!(matches!(parse_rate("1e9"), Err(RateError::NotARate(_))));
        assert!(matches!(parse_rate("12MBps"), Err(RateError::ByteRate(_))));
        assert!(matches!(parse_rate("12MB/s"), Err(RateError::ByteRate(_))));
        assert!(matches!(parse_rate("100"), Err(RateError::TooSlow { .. })));
        assert!(matches!(parse_rate("2T"), Err(RateError::TooFast(_))));
        assert!(matches!(
            parse_rate("99999999999999999999999"),
            Err(RateError::NotARate(_) | RateError::TooFast(_))
        ));
        assert!(matches!(rate_from_integer(-1), Err(RateError::Negative(_))));
        assert_eq!(rate_from_integer(1_000_000_000), Ok(1_000_000_000));
    }

    #[test]
    fn bursts_read_as_bytes() {
        assert_eq!(parse_burst("65536"), Ok(65536));
        assert_eq!(parse_burst("64k"), Ok(65536));
        assert_eq!(parse_burst("64KiB"), Ok(65536));
        assert_eq!(parse_burst("1m"), Ok(1 << 20));
        assert!(parse_burst("100").is_err(), "below one frame");
        assert!(parse_burst("1G").is_err());
        assert!(parse_burst("-64k").is_err());
        assert!(parse_burst("lots").is_err());
        assert!(burst_from_integer(-1).is_err());
        assert!(
            check_burst_for_rate(1 << 20, 8_000).is_err(),
            "1 MiB at 8 kbit/s"
        );
        assert!(check_burst_for_rate(1 << 20, 1_000_000_000).is_ok());
    }

    #[test]
    fn rates_display_short() {
        assert_eq!(display_rate(100_000_000), "100Mbit/s");
        assert_eq!(display_rate(1_500_000_000), "1.5Gbit/s");
        assert_eq!(display_rate(8_000), "8kbit/s");
        assert_eq!(display_rate(999), "999bit/s");
    }
}
