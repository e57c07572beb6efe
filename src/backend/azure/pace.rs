//! [`Pace`]: how fast, and how many at once, one client sends tries to one service.
//!
//! A per-try policy of an azure_core pipeline (after the retry policy), so every attempt the
//! service sees is counted, a retry as much as a first try: a throttling service counts what
//! arrives at its door.
//!
//! - **Concurrency** is a hard cap: at most `concurrency` tries are on the wire at once,
//!   however the callers nest their batches (a semaphore permit is held from before the try is
//!   sent until its answer is in; not while the retry policy sleeps between tries).
//! - **Rate**: governor's GCRA limiter admits each try at the plan's rate, with a burst of
//!   `burst_secs` of it (at least one try).
//! - **Throttling** lowers the pace: after a 429, no try starts before its `Retry-After` has
//!   passed, and the rate drops to what the service admitted over the last
//!   [`ADMITTED_WINDOW`] (to 90% of the rate, if it admitted more than that; by half at most
//!   in one step, and by half in the first second, before anything is measured): the client
//!   stays at or below the rate the service allowed for the rest of the process, instead of
//!   provoking a 429 for every try past it. Tries already on the wire were paced at the old
//!   rate, so a 429 lowers the rate at most once per `Retry-After`.

use azure_core::error::ErrorKind;
use azure_core::http::headers::{HeaderName, RETRY_AFTER};
use azure_core::http::policies::{Policy, PolicyResult, get_retry_after};
use azure_core::http::{Context, Request, StatusCode};
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use std::collections::VecDeque;
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Over how long the tries a service admitted are counted to learn its rate after a 429.
pub const ADMITTED_WINDOW: Duration = Duration::from_secs(2);
/// The slowest a 429 makes a client, in tries per second.
pub const MIN_RATE: f64 = 0.1;
/// How long a client must have tried before what the service admitted measures its rate.
const MEASURE_FROM: Duration = Duration::from_secs(1);
/// The wait after a 429 that names none.
const DEFAULT_RETRY_AFTER: Duration = Duration::from_secs(1);

/// The per-try policy described in the module doc; one per client of a service (several SDK
/// clients of one vault share one).
pub struct Pace {
    service: &'static str,
    in_flight: tokio::sync::Semaphore,
    concurrency: usize,
    burst_secs: f64,
    state: Mutex<State>,
}

struct State {
    /// Tries per second now (None: unpaced until a 429).
    rate: Option<f64>,
    limiter: Option<Arc<DefaultDirectRateLimiter>>,
    /// No try starts before this (a 429's `Retry-After`).
    hold_until: Option<Instant>,
    /// When a 429 last lowered the rate.
    lowered_at: Option<Instant>,
    /// When the first try started.
    first_try: Option<Instant>,
    /// When each try the service admitted (answered other than 429) got its answer, within
    /// the last [`ADMITTED_WINDOW`].
    admitted: VecDeque<Instant>,
}

impl std::fmt::Debug for Pace {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pace")
            .field("service", &self.service)
            .field("concurrency", &self.concurrency)
            .field("rate", &self.state().rate)
            .finish_non_exhaustive()
    }
}

fn limiter(rate: f64, burst_secs: f64) -> Arc<DefaultDirectRateLimiter> {
    let period = Duration::from_secs_f64(1.0 / rate).max(Duration::from_nanos(1));
    let burst = (rate * burst_secs).ceil().clamp(1.0, f64::from(u32::MAX)) as u32;
    let quota = Quota::with_period(period)
        .expect("a positive period")
        .allow_burst(NonZeroU32::new(burst).expect("burst is at least 1"));
    Arc::new(RateLimiter::direct(quota))
}

impl Pace {
    /// `service` (for the log) at `rate` tries per second (`None`, or not a positive number:
    /// unpaced until the service throttles), a burst of `burst_secs` of the rate, and at most
    /// `concurrency` tries at once (at least one).
    pub fn new(service: &'static str, rate: Option<f64>, burst_secs: f64, concurrency: usize) -> Arc<Pace> {
        let rate = rate.filter(|r| r.is_finite() && *r > 0.0);
        Arc::new(Pace {
            service,
            in_flight: tokio::sync::Semaphore::new(concurrency.max(1)),
            concurrency: concurrency.max(1),
            burst_secs,
            state: Mutex::new(State {
                rate,
                limiter: rate.map(|r| limiter(r, burst_secs)),
                hold_until: None,
                lowered_at: None,
                first_try: None,
                admitted: VecDeque::new(),
            }),
        })
    }

    /// The rate tries are paced at now, per second (None: unpaced).
    pub fn rate(&self) -> Option<f64> {
        self.state().rate
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Waits for `Retry-After` and the rate.
    async fn admit(&self) {
        loop {
            let hold = self.state().hold_until;
            match hold {
                Some(until) if until > Instant::now() => tokio::time::sleep_until(until.into()).await,
                _ => break,
            }
        }
        let limiter = self.state().limiter.clone();
        if let Some(limiter) = limiter {
            limiter.until_ready().await;
        }
        self.state().first_try.get_or_insert_with(Instant::now);
    }

    fn answered(&self, status: StatusCode, retry_after: Option<Duration>) {
        let now = Instant::now();
        let mut s = self.state();
        while s
            .admitted
            .front()
            .is_some_and(|t| now.duration_since(*t) > ADMITTED_WINDOW)
        {
            s.admitted.pop_front();
        }
        if status != StatusCode::TooManyRequests {
            s.admitted.push_back(now);
            return;
        }
        let wait = retry_after.unwrap_or(DEFAULT_RETRY_AFTER);
        let until = now + wait;
        s.hold_until = Some(s.hold_until.map_or(until, |h| h.max(until)));
        if s.lowered_at
            .is_some_and(|t| now.duration_since(t) < wait.max(DEFAULT_RETRY_AFTER))
        {
            return;
        }
        let span = s.first_try.map_or(Duration::ZERO, |t| now.duration_since(t));
        // What the service admitted is known once the client has tried for a while; a 429 in
        // the first burst only halves the rate (an unpaced client just waits). No step lowers
        // the rate below half of what it was: one short measure cannot stall the run.
        let measured =
            (span >= MEASURE_FROM).then(|| s.admitted.len() as f64 / span.min(ADMITTED_WINDOW).as_secs_f64());
        let lowered = match (s.rate, measured) {
            (Some(rate), Some(m)) if m >= rate => rate * 0.9,
            (Some(rate), Some(m)) => m.max(rate / 2.0),
            (Some(rate), None) => rate / 2.0,
            (None, Some(m)) => m,
            (None, None) => return,
        }
        .max(MIN_RATE);
        tracing::info!(
            target: super::observe::LOG_TARGET,
            "{} throttled (429): pacing at {lowered:.2} requests/s from now on (was {}); next try in {} ms",
            self.service,
            s.rate.map_or("unpaced".to_string(), |r| format!("{r:.2}/s")),
            wait.as_millis()
        );
        s.rate = Some(lowered);
        s.limiter = Some(limiter(lowered, self.burst_secs));
        s.lowered_at = Some(now);
    }
}

#[async_trait::async_trait]
impl Policy for Pace {
    async fn send(&self, ctx: &Context, request: &mut Request, next: &[Arc<dyn Policy>]) -> PolicyResult {
        let _permit = self.in_flight.acquire().await.map_err(|e| {
            azure_core::Error::with_message(ErrorKind::Other, format!("{} request slots: {e}", self.service))
        })?;
        self.admit().await;
        let result = next[0].send(ctx, request, &next[1..]).await;
        if let Ok(response) = &result {
            let retry_after = get_retry_after(
                response.headers(),
                time::OffsetDateTime::now_utc,
                &[
                    HeaderName::from_static("retry-after-ms"),
                    HeaderName::from_static("x-ms-retry-after-ms"),
                    RETRY_AFTER,
                ],
            )
            .and_then(|d| Duration::try_from(d).ok());
            self.answered(response.status(), retry_after);
        }
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_429_lowers_the_rate_to_what_the_service_admitted_and_holds_for_retry_after() {
        let pace = Pace::new("DPS", Some(4.0), 0.5, 4);
        {
            let mut s = pace.state();
            let start = Instant::now() - Duration::from_secs(3);
            s.first_try = Some(start);
            // Five answers admitted within the window: 2.5 a second over its 2 seconds.
            s.admitted = (0..5).map(|_| Instant::now()).collect();
        }
        pace.answered(StatusCode::TooManyRequests, Some(Duration::from_secs(2)));
        let rate = pace.rate().unwrap();
        assert!((rate - 2.5).abs() < 0.01, "{rate}");
        let hold = pace.state().hold_until.unwrap();
        assert!(
            hold > Instant::now() + Duration::from_millis(1500),
            "Retry-After is held"
        );
        // Another 429 within the same Retry-After does not lower it again.
        pace.answered(StatusCode::TooManyRequests, Some(Duration::from_secs(2)));
        assert_eq!(pace.rate(), Some(rate));
    }

    #[test]
    fn a_429_when_the_service_admitted_more_than_the_rate_still_lowers_it() {
        let pace = Pace::new("IoT Hub", Some(2.0), 0.5, 1);
        {
            let mut s = pace.state();
            s.first_try = Some(Instant::now() - Duration::from_secs(3));
            s.admitted = (0..10).map(|_| Instant::now()).collect();
        }
        pace.answered(StatusCode::TooManyRequests, None);
        assert_eq!(pace.rate(), Some(1.8));
        let unpaced = Pace::new("Key Vault", None, 0.5, 1);
        unpaced.answered(StatusCode::Ok, None);
        assert_eq!(unpaced.rate(), None, "admitted answers change nothing");
        unpaced.state().first_try = Some(Instant::now() - Duration::from_secs(5));
        unpaced.answered(StatusCode::TooManyRequests, None);
        assert_eq!(
            unpaced.rate(),
            Some(0.5),
            "an unpaced client is paced after a 429"
        );
    }

    #[test]
    fn a_429_before_anything_is_measured_halves_the_rate_and_no_step_more_than_halves_it() {
        let pace = Pace::new("DPS", Some(50.0), 0.5, 8);
        pace.state().first_try = Some(Instant::now());
        pace.answered(StatusCode::TooManyRequests, Some(Duration::ZERO));
        assert_eq!(pace.rate(), Some(25.0), "the first burst's 429");
        {
            let mut s = pace.state();
            s.first_try = Some(Instant::now() - Duration::from_secs(5));
            s.lowered_at = Some(Instant::now() - Duration::from_secs(5));
            s.admitted.clear();
        }
        pace.answered(StatusCode::TooManyRequests, None);
        assert_eq!(
            pace.rate(),
            Some(12.5),
            "nothing admitted lowers it by half, not to nothing"
        );
        let unpaced = Pace::new("Key Vault", None, 0.5, 1);
        unpaced.state().first_try = Some(Instant::now());
        unpaced.answered(StatusCode::TooManyRequests, None);
        assert_eq!(unpaced.rate(), None, "an unpaced client's first burst only waits");
        assert!(unpaced.state().hold_until.is_some());
    }
}
