//! What the sources of a limit ask for, before it is made: flags over the CNI keys over the
//! configuration file, each value already read by [`super::rate`] and named by its key.

use super::{
    rate::{self, RateError},
    HtbProfile, LimitDirection, Limits, RateLimit,
};

/// Per direction, a rate (`Some(0)`: no limit) and a burst; `None` = not given here.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LimitRequest {
    pub rx_rate: Option<u64>,
    pub rx_burst: Option<u64>,
    pub tx_rate: Option<u64>,
    pub tx_burst: Option<u64>,
    pub profile: Option<HtbProfile>,
}

/// A refused limit: which key (or flag) and why.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{key}: {source}")]
pub struct LimitKeyError {
    pub key: String,
    #[source]
    pub source: RateError,
}

impl LimitKeyError {
    pub fn new(key: impl Into<String>, source: RateError) -> Self {
        LimitKeyError {
            key: key.into(),
            source,
        }
    }
}

impl LimitRequest {
    /// Whether anything is asked for.
    pub fn is_empty(&self) -> bool {
        *self == LimitRequest::default()
    }

    /// `self`, with what it does not give taken from `lower` (a source below it).
    pub fn over(self, lower: LimitRequest) -> LimitRequest {
        LimitRequest {
            rx_rate: self.rx_rate.or(lower.rx_rate),
            rx_burst: self.rx_burst.or(lower.rx_burst),
            tx_rate: self.tx_rate.or(lower.tx_rate),
            tx_burst: self.tx_burst.or(lower.tx_burst),
            profile: self.profile.or(lower.profile),
        }
    }

    fn of(&self, direction: LimitDirection) -> (Option<u64>, Option<u64>) {
        match direction {
            LimitDirection::Rx => (self.rx_rate, self.rx_burst),
            LimitDirection::Tx => (self.tx_rate, self.tx_burst),
        }
    }

    /// The limits of a new endpoint.
    pub fn limits(&self) -> Result<Limits, LimitKeyError> {
        self.applied_to(&Limits::default())
    }

    /// `old` with this request applied (`netshim limit`): a direction not named keeps its
    /// limit, rate 0 removes it, a burst alone changes the burst of the limit there is.
    pub fn applied_to(&self, old: &Limits) -> Result<Limits, LimitKeyError> {
        let mut out = *old;
        for direction in LimitDirection::ALL {
            let key = direction.as_str();
            let (rate, burst) = self.of(direction);
            let current = old.get(direction);
            let new = match (rate, burst, current) {
                (None, None, current) => current,
                (Some(0), Some(_), _) => {
                    return Err(LimitKeyError::new(
                        format!("{key} burst"),
                        RateError::BurstWithoutRate,
                    ))
                }
                (Some(0), None, _) => None,
                (Some(rate_bps), burst, current) => Some(RateLimit {
                    rate_bps,
                    burst_bytes: burst.or(current.and_then(|c| c.burst_bytes)),
                }),
                (None, Some(b), Some(c)) => Some(RateLimit {
                    burst_bytes: Some(b),
                    ..c
                }),
                (None, Some(_), None) => {
                    return Err(LimitKeyError::new(
                        format!("{key} burst"),
                        RateError::BurstWithoutRate,
                    ))
                }
            };
            if let Some(RateLimit {
                rate_bps,
                burst_bytes: Some(b),
            }) = new
            {
                rate::check_burst_for_rate(b, rate_bps)
                    .map_err(|e| LimitKeyError::new(format!("{key} burst"), e))?;
            }
            match direction {
                LimitDirection::Rx => out.rx = new,
                LimitDirection::Tx => out.tx = new,
            }
        }
        Ok(out)
    }
}

/// kata's key names, in a `[hypervisor.*]` section of its configuration.toml and as
/// annotations (the CNI plugin takes the annotation names as runtimeConfig/args keys).
pub mod keys {
    pub const KATA_RX: &str = "rx_rate_limiter_max_rate";
    pub const KATA_TX: &str = "tx_rate_limiter_max_rate";
    pub const ANNOTATION_RX: &str = "io.katacontainers.config.hypervisor.rx_rate_limiter_max_rate";
    pub const ANNOTATION_TX: &str = "io.katacontainers.config.hypervisor.tx_rate_limiter_max_rate";
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lim(rate_bps: u64, burst: Option<u64>) -> Option<RateLimit> {
        Some(RateLimit {
            rate_bps,
            burst_bytes: burst,
        })
    }

    #[test]
    fn higher_sources_win_per_value() {
        let flags = LimitRequest {
            rx_rate: Some(100_000_000),
            ..Default::default()
        };
        let file = LimitRequest {
            rx_rate: Some(5_000_000),
            tx_rate: Some(1_000_000_000),
            ..Default::default()
        };
        let l = flags.over(file).limits().unwrap();
        assert_eq!(l.rx, lim(100_000_000, None));
        assert_eq!(l.tx, lim(1_000_000_000, None));
    }

    #[test]
    fn a_change_keeps_what_it_does_not_name_and_zero_removes() {
        let old = Limits {
            rx: lim(100_000_000, Some(65536)),
            tx: lim(1_000_000_000, None),
        };
        let change = LimitRequest {
            tx_rate: Some(0),
            rx_rate: Some(200_000_000),
            ..Default::default()
        };
        let new = change.applied_to(&old).unwrap();
        assert_eq!(new.rx, lim(200_000_000, Some(65536)), "burst kept");
        assert_eq!(new.tx, None);
        let burst_only = LimitRequest {
            rx_burst: Some(200_000),
            ..Default::default()
        };
        assert_eq!(
            burst_only.applied_to(&old).unwrap().rx,
            lim(100_000_000, Some(200_000))
        );
        let e = burst_only.applied_to(&Limits::default()).unwrap_err();
        assert_eq!(e.key, "rx burst");
        let e = LimitRequest {
            tx_rate: Some(8_000),
            tx_burst: Some(1 << 20),
            ..Default::default()
        }
        .limits()
        .unwrap_err();
        assert!(matches!(e.source, RateError::BurstTooLong { .. }), "{e}");
    }
}
