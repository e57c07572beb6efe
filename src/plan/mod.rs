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
pub fn parse(path: &Path, text: &str) -> Result<Plan, PlanError> {
    let raw: raw::RawPlan = toml::from_str(text).map_err(|e| {
        let (span, message) = first_schema_error(text, e);
        let mut message = plain_types(&message);
        if message == "duplicate key"
            && let Some(key) = span.clone().and_then(|r| text.get(r))
        {
            message = format!("duplicate key `{}`", crate::error::snippet(key.trim()));
        }
        PlanError::at_span(path, text, span, message)
    })?;
    validate::validate(path, text, raw)
}

/// The schema error nearest the top of the file. The toml deserializer reports an unknown key
/// before a wrong value written above it, so the unknown key's line is blanked (offsets kept)
/// and the text read again, a bounded number of times; an error found above it wins.
fn first_schema_error(text: &str, first: toml::de::Error) -> (Option<Range<usize>>, String) {
    let mut best = (first.span(), first.message().to_string());
    let mut current = best.clone();
    let mut scratch = text.to_string();
    for _ in 0..32 {
        let Some(span) = current.0.clone() else { break };
        if !current.1.starts_with("unknown field") {
            break;
        }
        // Only a key that starts its own line is blanked: removing part of an inline table
        // would make errors of its own.
        let line_start = scratch[..span.start].rfind('\n').map_or(0, |i| i + 1);
        if !scratch[line_start..span.start].trim().is_empty() {
            break;
        }
        let line_end = scratch[span.start..]
            .find('\n')
            .map_or(scratch.len(), |i| span.start + i);
        scratch.replace_range(line_start..line_end, &" ".repeat(line_end - line_start));
        let Err(e) = toml::from_str::<raw::RawPlan>(&scratch) else {
            break;
        };
        // A missing field is the blanking's doing, not the author's.
        if e.message().starts_with("missing field") {
            break;
        }
        current = (e.span(), e.message().to_string());
        let earlier = match (&current.0, &best.0) {
            (Some(now), Some(was)) => now.start < was.start,
            _ => false,
        };
        if earlier {
            best = current.clone();
        }
    }
    best
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
    // An integer beyond 128 bits: toml's own message names serde's type (`as i128`).
    if out.contains(" as i128") {
        out = "invalid value: the integer is too large".to_string();
    }
    out
}

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
