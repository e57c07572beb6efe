//! Misbehaviour on purpose, per service, from `[serve.services.SERVICE]`: a request rate above
//! which the service answers 429 with `Retry-After` (governor's GCRA limiter), a share of
//! injected 500/503 answers, a share of connections dropped without an answer (or the first
//! few, for a test that must see one), and a delay on every answer. Lets clients' retry and back-off behaviour be tested against Azure's real limits.
//! The rate may end after `throttle_secs`, so a client's rate can be seen to climb back.

use crate::plan::{ServeConfig, ServiceLimits};
use governor::clock::{Clock as _, DefaultClock};
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use std::collections::BTreeMap;
use std::num::NonZeroU32;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// What to do with one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Serve it (after `delay`).
    Serve {
        /// How long to hold the answer back.
        delay: Duration,
    },
    /// Answer 429 `Throttled` with `Retry-After` seconds.
    Throttle {
        /// Whole seconds until the limiter admits a request again (at least 1).
        retry_after: u64,
    },
    /// Answer with this injected status (500 or 503).
    Fail {
        /// The status.
        status: u16,
    },
    /// Drop the connection without answering.
    Drop,
}

struct Service {
    limits: ServiceLimits,
    limiter: Option<DefaultDirectRateLimiter>,
    /// When the service's first request came (`throttle_secs` counts from it).
    first: OnceLock<Instant>,
    /// Requests judged so far (`drop_first` counts them).
    seen: AtomicU32,
}

/// The faults of every service the plan names.
#[derive(Default)]
pub struct Faults {
    services: BTreeMap<String, Service>,
}

impl std::fmt::Debug for Faults {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.services.keys()).finish()
    }
}

/// A uniform sample in [0, 100).
fn percent_sample() -> f64 {
    let mut b = [0u8; 4];
    if crate::pki::random_bytes(&mut b).is_err() {
        return 100.0;
    }
    f64::from(u32::from_le_bytes(b)) / (f64::from(u32::MAX) + 1.0) * 100.0
}

impl Faults {
    /// The faults `[serve.services]` configures.
    pub fn new(config: &ServeConfig) -> Faults {
        let services = config
            .services
            .iter()
            .map(|(name, limits)| {
                let limiter = limits.rate_per_second.and_then(NonZeroU32::new).map(|rate| {
                    let burst = limits.burst.and_then(NonZeroU32::new).unwrap_or(rate);
                    RateLimiter::direct(Quota::per_second(rate).allow_burst(burst))
                });
                (
                    name.clone(),
                    Service {
                        limits: limits.clone(),
                        limiter,
                        first: OnceLock::new(),
                        seen: AtomicU32::new(0),
                    },
                )
            })
            .collect();
        Faults { services }
    }

    /// The verdict on one request to `service` (`keyvault`, `dps`, ...). Drops and injected
    /// errors come first, then the rate: a dropped or failed request still counts against it
    /// as it would at Azure.
    pub fn judge(&self, service: &str) -> Verdict {
        let Some(s) = self.services.get(service) else {
            return Verdict::Serve {
                delay: Duration::ZERO,
            };
        };
        let first = *s.first.get_or_init(Instant::now);
        if s.limits.drop_first > 0 && s.seen.fetch_add(1, Ordering::Relaxed) < s.limits.drop_first {
            return Verdict::Drop;
        }
        let throttling = s
            .limits
            .throttle_secs
            .is_none_or(|secs| first.elapsed() < Duration::from_secs(u64::from(secs)));
        if let Some(limiter) = s.limiter.as_ref().filter(|_| throttling)
            && let Err(not_until) = limiter.check()
        {
            let wait = not_until.wait_time_from(DefaultClock::default().now());
            return Verdict::Throttle {
                retry_after: wait.as_secs_f64().ceil().max(1.0) as u64,
            };
        }
        if s.limits.drop_percent > 0.0 && percent_sample() < s.limits.drop_percent {
            return Verdict::Drop;
        }
        if s.limits.error_percent > 0.0 && percent_sample() < s.limits.error_percent {
            return Verdict::Fail {
                status: s.limits.error_status,
            };
        }
        Verdict::Serve {
            delay: Duration::from_millis(u64::from(s.limits.delay_ms)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(limits: ServiceLimits) -> ServeConfig {
        let mut c = ServeConfig::default();
        c.services.insert("keyvault".into(), limits);
        c
    }

    #[test]
    fn a_burst_over_the_rate_is_throttled_with_retry_after() {
        let f = Faults::new(&config(ServiceLimits {
            rate_per_second: Some(1),
            burst: Some(3),
            error_status: 503,
            ..ServiceLimits::default()
        }));
        let verdicts: Vec<Verdict> = (0..5).map(|_| f.judge("keyvault")).collect();
        assert!(
            verdicts[..3].iter().all(|v| matches!(v, Verdict::Serve { .. })),
            "{verdicts:?}"
        );
        assert_eq!(verdicts[3], Verdict::Throttle { retry_after: 1 });
        assert_eq!(
            f.judge("dps"),
            Verdict::Serve {
                delay: Duration::ZERO
            },
            "other services are untouched"
        );
    }

    #[test]
    fn the_rate_ends_after_throttle_secs_from_the_first_request() {
        let limits = ServiceLimits {
            rate_per_second: Some(1),
            burst: Some(1),
            throttle_secs: Some(5),
            error_status: 503,
            ..ServiceLimits::default()
        };
        let f = Faults::new(&config(limits.clone()));
        assert!(matches!(f.judge("keyvault"), Verdict::Serve { .. }));
        assert!(
            matches!(f.judge("keyvault"), Verdict::Throttle { .. }),
            "within the 5 s"
        );
        let f = Faults::new(&config(limits));
        let _ = f.services["keyvault"]
            .first
            .set(Instant::now() - Duration::from_secs(6));
        assert!(
            (0..50).all(|_| matches!(f.judge("keyvault"), Verdict::Serve { .. })),
            "after them every request is admitted"
        );
    }

    #[test]
    fn all_errors_or_all_drops_at_one_hundred_percent() {
        let f = Faults::new(&config(ServiceLimits {
            error_percent: 100.0,
            error_status: 500,
            ..ServiceLimits::default()
        }));
        assert!((0..20).all(|_| f.judge("keyvault") == Verdict::Fail { status: 500 }));
        let f = Faults::new(&config(ServiceLimits {
            drop_percent: 100.0,
            error_status: 503,
            ..ServiceLimits::default()
        }));
        assert!((0..20).all(|_| f.judge("keyvault") == Verdict::Drop));
        let f = Faults::new(&config(ServiceLimits {
            drop_first: 2,
            error_status: 503,
            ..ServiceLimits::default()
        }));
        let verdicts: Vec<Verdict> = (0..4).map(|_| f.judge("keyvault")).collect();
        assert_eq!(
            verdicts,
            [
                Verdict::Drop,
                Verdict::Drop,
                Verdict::Serve {
                    delay: Duration::ZERO
                },
                Verdict::Serve {
                    delay: Duration::ZERO
                }
            ],
            "drop_first: the first two only"
        );
        let f = Faults::new(&config(ServiceLimits {
            error_percent: 50.0,
            error_status: 503,
            ..ServiceLimits::default()
        }));
        let failed = (0..2000)
            .filter(|_| {
                f.judge("keyvault")
                    != Verdict::Serve {
                        delay: Duration::ZERO,
                    }
            })
            .count();
        assert!((800..1200).contains(&failed), "about half: {failed}");
    }
}
