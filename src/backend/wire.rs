//! Azure's wire shapes that more than one layer writes: DPS's `DeviceRegistrationState`, the
//! times and entity-tags DPS and IoT Hub put on the wire, and a hub's host name.
//!
//! They live below both [`crate::serve`] (which answers with them) and [`crate::backend::local`]
//! (whose simulated devices answer a direct method with the registration state DPS gave them, in
//! DPS's own shape), so that neither layer reaches into the other. Pure: no clock, no store.

use crate::backend::types::RegistrationState;
use serde_json::{Map, Value, json};
use time::OffsetDateTime;

/// The DNS suffix of IoT hubs.
pub const HUB_SUFFIX: &str = ".azure-devices.net";

/// The host name of a hub of the store (`{hub}.azure-devices.net`).
pub fn hub_host(hub: &str) -> String {
    format!("{hub}{HUB_SUFFIX}")
}

/// ISO-8601 in UTC with milliseconds (`2026-11-30T21:10:40.123Z`), as DPS and IoT Hub write
/// their times.
pub fn wire_time(t: OffsetDateTime) -> String {
    let t = t.to_offset(time::UtcOffset::UTC);
    let (year, month, day) = t.to_calendar_date();
    let (hour, minute, second, milli) = t.to_hms_milli();
    // Written digit by digit: serve writes two of these for every enrollment a query page
    // carries and every certificate it reads, and `format!`'s machinery (with a calendar
    // look-up per field) was about 4% of its CPU in a bulk roll. Years past four digits go
    // the long way, as before.
    let Ok(year) = u16::try_from(year) else {
        return long_wire_time(t);
    };
    if year > 9999 {
        return long_wire_time(t);
    }
    let mut out = String::with_capacity(24);
    for (n, width, then) in [
        (year, 4, '-'),
        (u16::from(u8::from(month)), 2, '-'),
        (u16::from(day), 2, 'T'),
        (u16::from(hour), 2, ':'),
        (u16::from(minute), 2, ':'),
        (u16::from(second), 2, '.'),
        (milli, 3, 'Z'),
    ] {
        for place in (0..width).rev() {
            out.push(char::from(b'0' + (n / 10u16.pow(place) % 10) as u8));
        }
        out.push(then);
    }
    out
}

/// [`wire_time`] of a UTC time, by `format!` (any year).
fn long_wire_time(t: OffsetDateTime) -> String {
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second(),
        t.millisecond()
    )
}

/// An etag as sent on the wire: an HTTP entity-tag (the stored value, quoted).
pub fn wire_etag(etag: &str) -> String {
    format!("\"{etag}\"")
}

/// DPS's `DeviceRegistrationState` of a stored registration state (swagger
/// `stable/2021-10-01/service.json`): `assignedHub` and `deviceId` only once a hub was assigned
/// (the hub of the last successful assignment, still shown after a refused attempt, as DPS shows
/// it), `errorCode`/`errorMessage` only after a failed attempt, times and etag only once stored.
pub fn registration_json(r: &RegistrationState) -> Value {
    let mut out = Map::new();
    out.insert("registrationId".into(), json!(r.registration_id));
    if let Some(created) = r.created {
        out.insert("createdDateTimeUtc".into(), json!(wire_time(created)));
    }
    if let Some(hub) = &r.hub {
        out.insert("assignedHub".into(), json!(hub_host(hub)));
        out.insert(
            "deviceId".into(),
            json!(r.device_id.as_deref().unwrap_or(&r.registration_id)),
        );
    }
    out.insert("status".into(), json!(r.status));
    if let Some(s) = &r.substatus {
        out.insert("substatus".into(), json!(s));
    }
    if let Some(code) = r.error_code {
        out.insert("errorCode".into(), json!(code));
    }
    if let Some(message) = &r.error {
        out.insert("errorMessage".into(), json!(message));
    }
    if let Some(updated) = r.updated {
        out.insert("lastUpdatedDateTimeUtc".into(), json!(wire_time(updated)));
    }
    if let Some(etag) = &r.etag {
        out.insert("etag".into(), json!(wire_etag(etag)));
    }
    Value::Object(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    #[test]
    fn times_are_utc_with_milliseconds() {
        let t = time::macros::datetime!(2026-11-30 23:10:05.0421 +02:00);
        assert_eq!(wire_time(t), "2026-11-30T21:10:05.042Z");
    }

    /// The digit-by-digit text is the `format!` text it replaced, at every field's edges and
    /// at instants spread over the four-digit years.
    #[test]
    fn a_wire_time_is_the_text_format_wrote() {
        use time::macros::datetime;
        let mut instants = vec![
            datetime!(0000-01-01 00:00:00 UTC),
            datetime!(0001-01-01 00:00:00.001 UTC),
            datetime!(0999-12-31 23:59:59.999 UTC),
            datetime!(9999-12-31 23:59:59.9999 UTC),
            datetime!(2026-02-28 09:08:07.06 -05:30),
            datetime!(1970-01-01 00:00:00 UTC),
        ];
        let mut t = datetime!(0001-03-04 05:06:07.891 UTC);
        while t.year() < 9999 {
            instants.push(t);
            t += time::Duration::seconds(86_400 * 367 + 3_661) + time::Duration::milliseconds(7);
        }
        for t in instants {
            let utc = t.to_offset(time::UtcOffset::UTC);
            assert_eq!(wire_time(t), long_wire_time(utc), "{t}");
        }
        assert_eq!(
            wire_time(datetime!(0007-08-09 01:02:03.004 UTC)),
            "0007-08-09T01:02:03.004Z"
        );
    }

    /// Every `.rs` file under `dir`, recursively.
    fn sources(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                sources(&path, out);
            } else if path.extension().is_some_and(|e| e == "rs") {
                out.push(path);
            }
        }
    }

    /// Every `.rs` file of these layers (folders under src/, or single files).
    fn layer_sources(layers: &[&str]) -> Vec<std::path::PathBuf> {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
        let mut files = Vec::new();
        for layer in layers {
            let path = root.join(layer);
            if path.is_dir() {
                sources(&path, &mut files);
            } else {
                files.push(path);
            }
        }
        assert!(files.len() > 10, "found only {files:?}");
        files
    }

    /// The files that name `module` (`crate::NAME::`).
    fn users_of(files: &[std::path::PathBuf], module: &str) -> Vec<String> {
        let needle = format!("crate::{module}::");
        files
            .iter()
            .filter(|f| std::fs::read_to_string(f).unwrap().contains(&needle))
            .map(|f| f.display().to_string())
            .collect()
    }

    /// lib.rs's layering: `serve` sits above `backend`, `ops`, `store`, `pki` and `plan`, so
    /// none of those may call into it (a move of a wire helper must not be undone by a `use`).
    #[test]
    fn no_layer_below_serve_reaches_into_it() {
        let files = layer_sources(&["backend", "ops", "store", "pki", "plan", "clock.rs"]);
        let offenders = users_of(&files, "serve");
        assert!(
            offenders.is_empty(),
            "files below serve that use it: {offenders:?}"
        );
    }

    /// lib.rs's layering: `ops` (the verbs) sits above `backend`, `store`, `pki` and `plan`, so
    /// none of those may call into it; a naming rule both need (the vault names of CAs and
    /// devices) lives in `backend::types`. (`serve` is above `ops`: it runs the verbs' rules.)
    #[test]
    fn no_layer_below_ops_reaches_into_it() {
        let files = layer_sources(&["backend", "store", "pki", "plan", "clock.rs"]);
        let offenders = users_of(&files, "ops");
        assert!(offenders.is_empty(), "files below ops that use it: {offenders:?}");
    }
}
