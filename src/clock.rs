//! The clock, injectable so that every decision made from time can be tested at a chosen instant.
//!
//! Only `main`/the CLI edge picks a clock: the system clock, or the fixed instant of `--now`.

use time::OffsetDateTime;

/// A source of the current time.
pub trait Clock: Send + Sync {
    /// Now, in UTC.
    fn now(&self) -> OffsetDateTime;
}

/// The machine's clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> OffsetDateTime {
        OffsetDateTime::now_utc()
    }
}

/// A clock stopped at one instant (`--now`, tests).
#[derive(Debug, Clone, Copy)]
pub struct FixedClock(pub OffsetDateTime);

impl Clock for FixedClock {
    fn now(&self) -> OffsetDateTime {
        self.0
    }
}

/// Parses an RFC 3339 instant such as `2027-01-01T00:00:00Z`.
pub fn parse_rfc3339(text: &str) -> Result<OffsetDateTime, String> {
    OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339)
        .map_err(|e| format!("`{text}` is not an RFC 3339 time such as 2027-01-01T00:00:00Z: {e}"))
}

/// Formats an instant as RFC 3339 (UTC, seconds precision).
pub fn rfc3339(t: OffsetDateTime) -> String {
    let t = t
        .to_offset(time::UtcOffset::UTC)
        .replace_nanosecond(0)
        .unwrap_or(t);
    t.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|_| t.to_string())
}

/// The latest instant a certificate can name: RFC 5280's GeneralizedTime 99991231235959Z.
pub const LATEST: OffsetDateTime = time::macros::datetime!(9999-12-31 23:59:59 UTC);

/// The earliest instant certroll works with (GeneralizedTime has four-digit years).
pub const EARLIEST: OffsetDateTime = time::macros::datetime!(0001-01-01 00:00:00 UTC);

/// `t + d`, clamped to [`EARLIEST`]..=[`LATEST`]: a validity that would run past year 9999 ends at
/// 99991231235959Z instead of overflowing.
pub fn add(t: OffsetDateTime, d: time::Duration) -> OffsetDateTime {
    t.checked_add(d)
        .unwrap_or(if d.is_negative() { EARLIEST } else { LATEST })
        .clamp(EARLIEST, LATEST)
}

/// `t + days` (negative to go back), clamped as [`add`] is.
pub fn add_days(t: OffsetDateTime, days: i64) -> OffsetDateTime {
    add(t, time::Duration::days(days.clamp(-4_000_000, 4_000_000)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn day_arithmetic_clamps_to_the_years_a_certificate_can_name() {
        let late = parse_rfc3339("9995-01-01T00:00:00Z").unwrap();
        assert_eq!(add_days(late, 36500), LATEST);
        assert_eq!(add_days(late, i64::MAX), LATEST);
        assert_eq!(add_days(EARLIEST, -1), EARLIEST);
        let t = parse_rfc3339("2027-01-01T00:00:00Z").unwrap();
        assert_eq!(rfc3339(add_days(t, 365)), "2028-01-01T00:00:00Z");
        assert_eq!(rfc3339(add_days(t, -1)), "2026-12-31T00:00:00Z");
    }
}
