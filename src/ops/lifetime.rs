//! When a policy's lifetime actions fire for a certificate. Pure: `now` is passed in, so
//! `check` and `--due` decide the same way at any `--now`.
//!
//! `days_before_expiry = N` fires N days before notAfter; `lifetime_percentage = P` fires when P%
//! of notBefore..notAfter has passed (Key Vault's two triggers).

use crate::plan::{ActionKind, LifetimeAction, Trigger};
use time::{Duration, OffsetDateTime};

/// One lifetime action, placed in time for one certificate.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Scheduled {
    /// The action.
    pub action: ActionKind,
    /// Its trigger, as written in the plan.
    pub trigger: Trigger,
    /// When it fires.
    pub at: OffsetDateTime,
}

/// When `trigger` fires for a certificate valid from `not_before` to `not_after`.
pub fn fires_at(trigger: Trigger, not_before: OffsetDateTime, not_after: OffsetDateTime) -> OffsetDateTime {
    match trigger {
        Trigger::DaysBeforeExpiry(days) => crate::clock::add_days(not_after, -(days as i64)),
        Trigger::LifetimePercentage(pct) => {
            let lifetime = (not_after - not_before).whole_seconds();
            crate::clock::add(
                not_before,
                Duration::seconds(lifetime.saturating_mul(pct as i64) / 100),
            )
        }
    }
}

/// Every action placed in time, earliest first.
pub fn schedule(
    actions: &[LifetimeAction],
    not_before: OffsetDateTime,
    not_after: OffsetDateTime,
) -> Vec<Scheduled> {
    let mut out: Vec<Scheduled> = actions
        .iter()
        .map(|a| Scheduled {
            action: a.action,
            trigger: a.trigger,
            at: fires_at(a.trigger, not_before, not_after),
        })
        .collect();
    out.sort_by_key(|s| s.at);
    out
}

/// The actions due at `now` (fired, not yet acted on: the certificate is still current).
pub fn due(
    actions: &[LifetimeAction],
    not_before: OffsetDateTime,
    not_after: OffsetDateTime,
    now: OffsetDateTime,
) -> Vec<Scheduled> {
    schedule(actions, not_before, not_after)
        .into_iter()
        .filter(|s| s.at <= now)
        .collect()
}

/// The next action that has not fired yet at `now`.
pub fn next(
    actions: &[LifetimeAction],
    not_before: OffsetDateTime,
    not_after: OffsetDateTime,
    now: OffsetDateTime,
) -> Option<Scheduled> {
    schedule(actions, not_before, not_after)
        .into_iter()
        .find(|s| s.at > now)
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    const ACTIONS: [LifetimeAction; 2] = [
        LifetimeAction {
            trigger: Trigger::DaysBeforeExpiry(30),
            action: ActionKind::AutoRenew,
        },
        LifetimeAction {
            trigger: Trigger::LifetimePercentage(80),
            action: ActionKind::EmailContacts,
        },
    ];

    #[test]
    fn triggers_are_placed_from_the_real_validity() {
        let (nbf, exp) = (datetime!(2026-01-01 0:00 UTC), datetime!(2027-01-01 0:00 UTC));
        assert_eq!(
            fires_at(Trigger::DaysBeforeExpiry(30), nbf, exp),
            datetime!(2026-12-02 0:00 UTC)
        );
        // 80% of 365 days = 292 days.
        assert_eq!(
            fires_at(Trigger::LifetimePercentage(80), nbf, exp),
            datetime!(2026-10-20 0:00 UTC)
        );
        let s = schedule(&ACTIONS, nbf, exp);
        assert_eq!(s[0].action, ActionKind::EmailContacts, "earliest first");
    }

    #[test]
    fn due_and_next_move_with_the_clock() {
        let (nbf, exp) = (datetime!(2026-01-01 0:00 UTC), datetime!(2027-01-01 0:00 UTC));
        assert!(due(&ACTIONS, nbf, exp, datetime!(2026-10-19 0:00 UTC)).is_empty());
        assert_eq!(
            next(&ACTIONS, nbf, exp, datetime!(2026-10-19 0:00 UTC))
                .unwrap()
                .action,
            ActionKind::EmailContacts
        );
        let at = datetime!(2026-11-01 0:00 UTC);
        assert_eq!(due(&ACTIONS, nbf, exp, at).len(), 1);
        assert_eq!(
            next(&ACTIONS, nbf, exp, at).unwrap().action,
            ActionKind::AutoRenew
        );
        assert_eq!(
            due(&ACTIONS, nbf, exp, datetime!(2026-12-02 0:00 UTC)).len(),
            2,
            "fires at the instant"
        );
        assert!(next(&ACTIONS, nbf, exp, datetime!(2026-12-02 0:00 UTC)).is_none());
    }
}
