//! The plan file: TOML schema, loading and validation.
//!
//! `plan` owns turning a `certroll.toml` (and the device lists it names) into a validated
//! [`Plan`]: the serde schema lives in `raw` (every value that a later error may point at is a
//! [`toml::Spanned`]), the checks in `validate`, and the validated types in `model`. The format is
//! documented in `docs/plan.md`.
//!
//! `plan` reads the plan file and the device-list files it names, and nothing else: it never
//! touches the store, a backend, the network or the clock. Every error carries the file, a
//! 1-based line and column when there is one, and a message that names the offending value, so
//! the CLI can print it as is (`certroll.toml:12:9: policy `devic` is not defined ...`).

mod azure;
mod delivery;
mod model;
mod raw;
mod schema;
mod validate;

#[cfg(test)]
mod tests;

pub use azure::*;
pub use delivery::*;
pub use model::*;

use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};

/// Reads, parses and validates the plan at `path` (and the device lists it names).
///
/// Relative paths in the plan are resolved against the plan file's folder. Nothing but the plan
/// and its device lists is read; nothing is written.
pub fn load(path: &Path) -> Result<Plan, PlanError> {
    let bytes = crate::fsutil::read_bounded(path, MAX_PLAN_BYTES).map_err(|e| PlanError {
        path: path.to_path_buf(),
        line: None,
        column: None,
        message: format!("cannot read the plan: {e}"),
    })?;
    let text = utf8(path, bytes)?;
    parse(path, &text)
}

/// The largest plan file read (a plan is a few kilobytes; device lists are separate files).
pub const MAX_PLAN_BYTES: u64 = 16 << 20;

/// The largest device list read (about 10 million ids).
pub const MAX_DEVICE_LIST_BYTES: u64 = 512 << 20;

/// Decodes a file read as bytes, naming the line and column of the first byte that is not UTF-8.
pub(crate) fn utf8(path: &Path, bytes: Vec<u8>) -> Result<String, PlanError> {
    String::from_utf8(bytes).map_err(|e| {
        let bad = e.utf8_error().valid_up_to();
        let before = &e.as_bytes()[..bad];
        let line = before.iter().filter(|&&b| b == b'\n').count() + 1;
        let line_start = before.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
        let column = String::from_utf8_lossy(&before[line_start..]).chars().count() + 1;
        PlanError {
            path: path.to_path_buf(),
            line: Some(line),
            column: Some(column),
            message: format!(
                "byte 0x{:02X} is not UTF-8 (the file must be UTF-8 text)",
                e.as_bytes()[bad]
            ),
        }
    })
}

/// Parses and validates plan `text` as if it had been read from `path`.
///
/// `path` is used in error messages and to resolve the plan's relative paths (store, key file,
/// device lists) against `path.parent()`. Device lists are read from disk.
///
/// Of all the errors in the plan, whichever phase finds them (TOML syntax, unknown keys, value
/// types, missing keys, values, references, device lists), the one that comes first in the
/// file is returned (see `schema` for how errors past a schema error are still found). Only a
/// missing or unsupported `version` comes before everything.
pub fn parse(path: &Path, text: &str) -> Result<Plan, PlanError> {
    let read = schema::read(text);
    if let Some(e) = validate::version_error(path, text, read.version.as_ref(), read.version_missing) {
        return Err(e);
    }
    let mut errors: Vec<((usize, usize), PlanError)> = read
        .errors
        .into_iter()
        .map(|(span, message, order)| {
            let order = (order, 0);
            (
                order,
                PlanError::at_span(path, text, span.clone(), schema_message(text, span, &message)),
            )
        })
        .collect();
    if let Some((first, second)) = read.raws {
        let found = match validate::validate(path, text, first) {
            Ok(plan) if errors.is_empty() => return Ok(plan),
            Ok(_) => Vec::new(),
            Err(found) => found,
        };
        // With placeholders, an error stands only when the second set finds it too.
        let again = second.map(|second| validate::validate(path, text, second).err().unwrap_or_default());
        for (order, error) in found {
            let at = order.0;
            if let Some((_, literal, shown)) = read.overflows.iter().find(|(s, _, _)| s.start == at) {
                // The validator's range message is clearer than "too large": said of the
                // integer as written.
                let message = error.message.replace(shown.as_str(), literal);
                if let Some(slot) = errors.iter_mut().find(|(o, _)| o.0 == at) {
                    slot.1.message = message;
                }
                continue;
            }
            let echo = read
                .placeholders
                .iter()
                .any(|p| p.start <= at && (at < p.end || at == p.start));
            let stands = again.as_ref().is_none_or(|again| {
                again
                    .iter()
                    .any(|(o, e)| *o == order && e.message == error.message)
            });
            if !echo && stands {
                errors.push((order, error));
            }
        }
    }
    // A stable minimum: of errors at one place, the one found first (the schema's).
    match errors
        .into_iter()
        .enumerate()
        .min_by_key(|(i, (order, _))| (*order, *i))
    {
        Some((_, (_, error))) => Err(error),
        None => Err(PlanError::whole_file(
            path,
            "the plan could not be read (no error was found to name)".to_string(),
        )),
    }
}

/// A schema or syntax error's message as a plan's author reads it.
fn schema_message(text: &str, span: Option<Range<usize>>, message: &str) -> String {
    let mut message = plain_types(message.trim_end());
    if message == "duplicate key"
        && let Some(key) = span.and_then(|r| text.get(r))
    {
        message = format!("duplicate key `{}`", crate::error::snippet(key.trim()));
    }
    message
}

/// serde's type names (`i64`, `u32`, `f64`) in a message, said as a plan's author would.
fn plain_types(message: &str) -> String {
    let mut out = message.to_string();
    for (rust, plain) in [
        ("expected i64", "expected an integer"),
        ("expected u64", "expected a whole number of at least 0"),
        ("expected u32", "expected a whole number of at least 0"),
        ("expected u16", "expected a whole number of at least 0"),
        ("expected u8", "expected a whole number of at least 0"),
        ("expected i32", "expected an integer"),
        ("expected f64", "expected a number"),
        ("expected a boolean", "expected true or false"),
        (
            "expected a sequence",
            "expected a list in brackets, like [\"a\", \"b\"]",
        ),
    ] {
        out = out.replace(rust, plain);
    }
    // A table serde knows by its Rust struct: said as the table the plan writes there.
    for (rust, plain) in TABLES {
        out = out.replace(&format!("expected struct {rust}"), &format!("expected {plain}"));
    }
    out = out.replace("expected a map", "expected a table");
    // An integer beyond 64 bits (toml's own message names serde's `i128` past 128).
    if out.starts_with("integer number overflowed") {
        out = "the integer is out of range (too large for any setting of a plan)".to_string();
    } else if let Some(rest) = out
        .strip_prefix("invalid value: integer `")
        .or_else(|| out.strip_prefix("invalid type: integer `"))
        && let Some((literal, _)) = rest.split_once('`')
        && literal.parse::<i64>().is_err()
    {
        out = format!("the integer {literal} is out of range (too large for any setting of a plan)");
    }
    out
}

/// The raw schema's struct names and the tables they are, in a plan author's words.
const TABLES: &[(&str, &str)] = &[
    ("RawPlan", "a plan (a TOML document)"),
    (
        "RawBackend",
        "a table of backend settings, like [backend] with kind = \"local\"",
    ),
    (
        "RawAzureDps",
        "a table like { host = \"...\", id_scope = \"...\", sas_policy = \"...\", sas_key_env = \"...\" }",
    ),
    (
        "RawAzureHub",
        "a table like { host = \"...\", sas_policy = \"...\", sas_key_env = \"...\" }",
    ),
    ("RawContacts", "a table like [contacts] with emails = [\"...\"]"),
    (
        "RawPolicy",
        "a table of policy settings (key, validity_days, ...)",
    ),
    ("RawKey", "a table like { type = \"EC\", curve = \"P-256\" }"),
    (
        "RawLifetimeAction",
        "a table like { days_before_expiry = 30, action = \"auto-renew\" }",
    ),
    (
        "RawCa",
        "a table of CA settings (subject, policy, issuer, path_len)",
    ),
    (
        "RawGroup",
        "a table of group settings (signing_ca, hub, device_policy, devices, ...)",
    ),
    (
        "RawDevices",
        "a table like { prefix = \"sensor-\", count = 100 } or { file = \"devices.txt\" }",
    ),
    (
        "RawEnrollment",
        "a table of enrollment settings (issuer, policy, hub, ...)",
    ),
    ("RawMail", "a table of mail settings (smtp_host, from, ...)"),
    ("RawHooks", "a table like { command = [\"program\", \"arg\"] }"),
    (
        "RawServe",
        "a table of serve settings (vault, dps, principals, services)",
    ),
    (
        "RawServiceLimits",
        "a table of limits (rate_per_second, burst, error_percent, ...)",
    ),
    (
        "RawPrincipal",
        "a table like { token_env = \"...\", permissions = [\"...\"] }",
    ),
];

/// Why a plan was rejected: where (file, line, column) and what.
///
/// Displays as `{path}:{line}:{column}: {message}`, or `{path}: {message}` when the error has no
/// location (the file could not be read, `version` is missing). The path is the plan file, or a
/// device list named by the plan when the error is inside that list.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct PlanError {
    /// The file the error is in, as the user would recognise it (the plan path as given, or a
    /// device list path joined onto the plan's folder).
    pub path: PathBuf,
    /// 1-based line, if the error has a location.
    pub line: Option<usize>,
    /// 1-based column in characters, if the error has a location.
    pub column: Option<usize>,
    /// What is wrong, naming the offending value.
    pub message: String,
}

impl fmt::Display for PlanError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.line, self.column) {
            (Some(line), Some(column)) => {
                write!(f, "{}:{line}:{column}: {}", self.path.display(), self.message)
            }
            (Some(line), None) => write!(f, "{}:{line}: {}", self.path.display(), self.message),
            _ => write!(f, "{}: {}", self.path.display(), self.message),
        }
    }
}

impl PlanError {
    /// An error without a location.
    fn whole_file(path: &Path, message: String) -> PlanError {
        PlanError {
            path: path.to_path_buf(),
            line: None,
            column: None,
            message,
        }
    }

    /// An error at the start of a byte span of `text` (or without a location when there is none).
    fn at_span(path: &Path, text: &str, span: Option<Range<usize>>, message: String) -> PlanError {
        match span {
            Some(span) => {
                let (line, column) = line_column(text, span.start);
                PlanError {
                    path: path.to_path_buf(),
                    line: Some(line),
                    column: Some(column),
                    message,
                }
            }
            None => PlanError::whole_file(path, message),
        }
    }
}

/// The 1-based line and column (in characters) of byte `offset` in `text`.
///
/// An offset past the end is clamped to the end; one inside a multi-byte character counts as
/// that character.
fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let mut offset = offset.min(text.len());
    while !text.is_char_boundary(offset) {
        offset -= 1;
    }
    let before = &text[..offset];
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let line = before.matches('\n').count() + 1;
    let column = before[line_start..].chars().count() + 1;
    (line, column)
}
