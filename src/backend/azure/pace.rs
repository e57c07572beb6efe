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
//! - **Throttling** lowers the pace (the multiplicative decrease of AIMD): after a 429, no try
//!   starts before its `Retry-After` has passed, and the rate drops to what the service
//!   admitted over the last [`ADMITTED_WINDOW`] (to 90% of the rate, if it admitted more than
//!   that; by half at most in one step, and by half in the first second, before anything is
//!   measured), instead of provoking a 429 for every try past it. Tries already on the wire
//!   were paced at the old rate, so a 429 lowers the rate at most once per `Retry-After`.
//! - **Quiet** raises it again (the additive increase): once the service has admitted every
//!   try for [`RAISE_AFTER`] since the rate last changed, while the client used at least half
//!   of it, the rate rises by one step, up to the plan's rate (without bound for a client the
//!   plan leaves unpaced: there it rises only while the client uses it). The first step after
//!   a 429 is [`RAISE_STEP`] of the rate the 429 set, and each step the service admits for a
//!   whole quiet interval doubles the next: close to the rate the service throttled at, the
//!   client probes gently (a plan's rate far above the service's would otherwise make every
//!   probe a 429 storm); far from it, back to the plan's rate in a few intervals (a throttling
//!   that ended, another client's burst or a service scaled up, costs the rest of a long run
//!   nothing). A service that still throttles answers a step with a 429, which takes the rate
//!   back down to what it admitted and the step back to its first size. A raised limiter
//!   starts empty: a raise adds rate, not a burst.

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
/// How long the service must admit every try, after the rate last changed, before it is
/// raised one step.
pub const RAISE_AFTER: Duration = Duration::from_secs(2);
/// The first raise after a 429, as a share of the rate it set; each raise the service admits
/// doubles the next (from half the plan's rate back to all of it in four quiet intervals).
pub const RAISE_STEP: f64 = 0.1;
/// The share of the rate a client must have used over the last [`ADMITTED_WINDOW`] for a quiet
/// interval to raise it: a rate the client does not reach says nothing of what the service
/// admits.
const USED_TO_RAISE: f64 = 0.5;

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
    /// The plan's rate: the most a raise goes back to (None: unpaced, no bound).
    ceiling: Option<f64>,
    /// How much the next raise adds, per second (set by each 429 that lowers the rate).
    step: f64,
    /// When the rate was last raised.
    raised_at: Option<Instant>,
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

/// A limiter at `rate` tries per second with a burst of `burst_secs` of it; `spent`: its
/// burst already taken, so it admits at the rate from now on.
fn limiter(rate: f64, burst_secs: f64, spent: bool) -> Arc<DefaultDirectRateLimiter> {
    let period = Duration::from_secs_f64(1.0 / rate).max(Duration::from_nanos(1));
    let burst = NonZeroU32::new((rate * burst_secs).ceil().clamp(1.0, f64::from(u32::MAX)) as u32)
        .expect("burst is at least 1");
    let quota = Quota::with_period(period)
        .expect("a positive period")
        .allow_burst(burst);
    let limiter = RateLimiter::direct(quota);
    if spent {
        // A fresh limiter's whole burst fits: this takes it.
        let _ = limiter.check_n(burst);
    }
    Arc::new(limiter)
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
                ceiling: rate,
                step: 0.0,
                raised_at: None,
                limiter: rate.map(|r| limiter(r, burst_secs, false)),
                hold_until: None,
                lowered_at: None,
                first_try: None,
                admitted: VecDeque::new(),
            }),
        })
    }

    /// Most tries on the wire at once.
    pub fn concurrency(&self) -> usize {
        self.concurrency
    }

    /// The rate tries are paced at now, per second (None: unpaced).
    pub fn rate(&self) -> Option<f64> {
        self.state().rate
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Waits for `Retry-After` and the rate. A try that waited for its turn looks again once it
    /// has it: a 429 meanwhile holds it for its `Retry-After` too, and a new rate (a new limiter)
    /// paces it anew. Otherwise the tries queued on the old limiter all went out at the old rate
    /// (or during the hold), drawing 429s that lowered the rate again and again while the
    /// service saw more than the client meant to send (trial az5 F-DPS-PACING: 234 429s to 218
    /// admitted at 1/s, the client "pacing at 0.10/s").
    async fn admit(&self) {
        loop {
            let (hold, limiter) = {
                let s = self.state();
                (s.hold_until, s.limiter.clone())
            };
            if let Some(until) = hold.filter(|u| *u > Instant::now()) {
                tokio::time::sleep_until(until.into()).await;
                continue;
            }
            if let Some(limiter) = &limiter {
                limiter.until_ready().await;
            }
            let mut s = self.state();
            let same = match (&limiter, &s.limiter) {
                (Some(waited), Some(now)) => Arc::ptr_eq(waited, now),
                (None, None) => true,
                _ => false,
            };
            if same && s.hold_until.is_none_or(|u| u <= Instant::now()) {
                s.first_try.get_or_insert_with(Instant::now);
                return;
            }
        }
    }

    fn answered(&self, status: StatusCode, retry_after: Option<Duration>) {
        self.answered_at(Instant::now(), status, retry_after);
    }

    /// As the answer came at `now` (tests move time on by passing a later instant).
    fn answered_at(&self, now: Instant, status: StatusCode, retry_after: Option<Duration>) {
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
            self.raise(&mut s, now);
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
        s.step = (lowered * RAISE_STEP).max(MIN_RATE * RAISE_STEP);
        s.rate = Some(lowered);
        s.limiter = Some(limiter(lowered, self.burst_secs, false));
        s.lowered_at = Some(now);
    }

    /// One additive step up, when the service has admitted every try for [`RAISE_AFTER`] since
    /// the rate last changed and the client used the rate (see the module doc).
    fn raise(&self, s: &mut State, now: Instant) {
        let (Some(rate), Some(lowered_at)) = (s.rate, s.lowered_at) else {
            return; // never throttled: at the plan's rate, or unpaced
        };
        let step = s.step;
        if s.ceiling.is_some_and(|c| rate >= c) {
            return;
        }
        let since = lowered_at.max(s.raised_at.unwrap_or(lowered_at));
        let quiet =
            now.saturating_duration_since(since) >= RAISE_AFTER && s.hold_until.is_none_or(|h| h <= now);
        let used = s.admitted.len() as f64 / ADMITTED_WINDOW.as_secs_f64() >= USED_TO_RAISE * rate;
        if !quiet || !used {
            return;
        }
        let raised = s.ceiling.map_or(rate + step, |c| (rate + step).min(c));
        let back = if s.ceiling == Some(raised) {
            " (the plan's rate)"
        } else {
            ""
        };
        tracing::info!(
            target: super::observe::LOG_TARGET,
            "{} admitted every request for {} s: pacing at {raised:.2} requests/s{back} (was {rate:.2}/s)",
            self.service,
            RAISE_AFTER.as_secs()
        );
        s.rate = Some(raised);
        // A new limiter holds a full burst; spent at once, it would be a burst the service
        // never saw from this client. Taken now, the raise adds only rate.
        s.limiter = Some(limiter(raised, self.burst_secs, true));
        s.raised_at = Some(now);
        // Twice as far next time, if the service admits this step for a quiet interval; a 429
        // before that sets the step back to its first size.
        s.step = step * 2.0;
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
            // Only a 429's wait is used; looking on every answer would cost a captured
            // backtrace per absent header (typespec's header lookup) when RUST_BACKTRACE is set.
            let throttled = response.status() == StatusCode::TooManyRequests;
            let retry_after = throttled
                .then(|| {
                    get_retry_after(
                        response.headers(),
                        time::OffsetDateTime::now_utc,
                        &[
                            HeaderName::from_static("retry-after-ms"),
                            HeaderName::from_static("x-ms-retry-after-ms"),
                            RETRY_AFTER,
                        ],
                    )
                })
                .flatten()
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

    /// A try waiting for its turn when a 429 comes is held for that 429's `Retry-After` and
    /// paced at the lowered rate, not sent when the old limiter's turn comes (trial az5
    /// F-DPS-PACING). Only lower bounds on time: a slow machine cannot make this pass wrongly.
    #[test]
    fn a_try_waiting_for_its_turn_is_held_by_a_429_that_comes_meanwhile() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap();
        let pace = Pace::new("DPS", Some(2.0), 0.5, 4);
        rt.block_on(async {
            let start = Instant::now();
            pace.admit().await; // the burst of one
            let waiting = async {
                pace.admit().await;
                Instant::now()
            };
            let throttle = async {
                tokio::time::sleep(Duration::from_millis(100)).await;
                pace.answered(StatusCode::TooManyRequests, Some(Duration::from_millis(1500)));
            };
            let (admitted, ()) = tokio::join!(waiting, throttle);
            let after = admitted.duration_since(start);
            assert!(
                after >= Duration::from_millis(1600),
                "the waiting try went out {after:?} after the start, inside the 429's Retry-After"
            );
        });
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

    /// Answers admitted every 100 ms from `from` for `secs` seconds; the rate after each.
    fn admitted_for(pace: &Pace, from: Instant, secs: u64) -> Vec<(Duration, f64)> {
        (1..=secs * 10)
            .map(|k| {
                let at = Duration::from_millis(k * 100);
                pace.answered_at(from + at, StatusCode::Ok, None);
                (at, pace.rate().unwrap())
            })
            .collect()
    }

    #[test]
    fn quiet_intervals_raise_the_rate_by_growing_steps_back_to_the_plans_rate() {
        let pace = Pace::new("DPS", Some(10.0), 0.5, 4);
        let t0 = Instant::now();
        pace.state().first_try = Some(t0 - Duration::from_secs(3));
        pace.answered_at(t0, StatusCode::TooManyRequests, Some(Duration::from_secs(1)));
        assert_eq!(pace.rate(), Some(5.0), "nothing admitted: halved");
        // Ten answers a second, above half of every rate on the way: the client uses its rate.
        let rates = admitted_for(&pace, t0, 15);
        let at = |secs: f64| {
            rates
                .iter()
                .rev()
                .find(|(t, _)| t.as_secs_f64() <= secs + 1e-9)
                .map(|(_, r)| *r)
                .unwrap()
        };
        let near = |a: f64, b: f64| (a - b).abs() < 1e-9;
        assert_eq!(at(1.9), 5.0, "no raise before {RAISE_AFTER:?} of quiet");
        assert!(
            near(at(2.0), 5.5),
            "a first step of 10% of the rate the 429 set: {}",
            at(2.0)
        );
        assert!(near(at(3.9), 5.5), "one step per quiet interval: {}", at(3.9));
        assert!(
            near(at(4.0), 6.5),
            "each admitted step doubles the next: {}",
            at(4.0)
        );
        assert!(near(at(6.0), 8.5), "{}", at(6.0));
        assert_eq!(at(8.0), 10.0, "back at the plan's rate");
        assert_eq!(at(15.0), 10.0, "and no further");
        assert!(
            rates.windows(2).all(|w| w[1].1 >= w[0].1),
            "quiet never lowers it"
        );
        let raises: Vec<Duration> = rates
            .windows(2)
            .filter(|w| w[1].1 > w[0].1)
            .map(|w| w[1].0)
            .collect();
        assert_eq!(raises.len(), 4, "{raises:?}");
        assert!(
            raises.windows(2).all(|w| w[1] - w[0] >= RAISE_AFTER),
            "{raises:?}"
        );
        // A raised limiter starts with its burst spent: the raise adds rate, not a burst.
        let limiter = pace.state().limiter.clone().unwrap();
        assert!(
            limiter.check().is_err(),
            "a raised limiter admitted a burst at once"
        );
    }

    #[test]
    fn a_429_on_the_way_up_lowers_it_again_and_the_climb_restarts_with_a_small_step() {
        let pace = Pace::new("IoT Hub", Some(10.0), 0.5, 4);
        let t0 = Instant::now();
        pace.state().first_try = Some(t0 - Duration::from_secs(3));
        pace.answered_at(t0, StatusCode::TooManyRequests, Some(Duration::from_secs(1)));
        admitted_for(&pace, t0, 4);
        let before = pace.rate().unwrap();
        assert!((before - 6.5).abs() < 1e-9, "{before}");
        // The service throttles at 6.5/s: it admitted 20 tries over the last 2 s (10/s, more
        // than the rate), so the multiplicative decrease takes 10% off.
        let t1 = t0 + Duration::from_millis(4050);
        pace.answered_at(t1, StatusCode::TooManyRequests, Some(Duration::from_secs(1)));
        let lowered = pace.rate().unwrap();
        assert!((lowered - 5.85).abs() < 1e-9, "{lowered}");
        // Answers during Retry-After and the rest of the quiet interval raise nothing; then
        // the step is 10% of the new rate again, not the doubled one.
        let rates = admitted_for(&pace, t1, 2);
        assert!(rates[..19].iter().all(|(_, r)| *r == lowered), "{rates:?}");
        assert!((rates[19].1 - 5.85 * 1.1).abs() < 1e-9, "{rates:?}");
    }

    #[test]
    fn a_rate_the_client_does_not_use_is_not_raised_and_an_unpaced_client_has_no_ceiling() {
        let pace = Pace::new("DPS", Some(10.0), 0.5, 4);
        let t0 = Instant::now();
        pace.state().first_try = Some(t0 - Duration::from_secs(3));
        pace.answered_at(t0, StatusCode::TooManyRequests, None);
        // One answer a second: a fifth of the 5/s it is paced at.
        for k in 1..=10 {
            pace.answered_at(t0 + Duration::from_secs(k), StatusCode::Ok, None);
        }
        assert_eq!(
            pace.rate(),
            Some(5.0),
            "raised while the client sent a fifth of it"
        );

        let unpaced = Pace::new("Key Vault", None, 0.5, 4);
        unpaced.state().first_try = Some(t0 - Duration::from_secs(5));
        unpaced.state().admitted = (0..8).map(|_| t0).collect();
        unpaced.answered_at(t0, StatusCode::TooManyRequests, None);
        assert_eq!(unpaced.rate(), Some(4.0), "what the service admitted");
        // Forty answers a second for 12 s: six steps (0.4, 0.8, ... 12.8), past any plan.
        let at = |k: u64| t0 + Duration::from_millis(k * 25);
        for k in 1..=(40 * 12) {
            unpaced.answered_at(at(k), StatusCode::Ok, None);
        }
        let rate = unpaced.rate().unwrap();
        assert!((rate - 29.2).abs() < 1e-9, "{rate}");
        // Ten a second from then on: a third of 29.2, so it rises no further.
        for k in 1..=100 {
            unpaced.answered_at(at(40 * 12) + Duration::from_millis(k * 100), StatusCode::Ok, None);
        }
        assert_eq!(unpaced.rate(), Some(rate), "raised past what the client uses");
    }
}
