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
mod model;
mod raw;
mod validate;

#[cfg(test)]
mod tests;

pub use azure::*;
pub use model::*;

use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};

/// Reads, parses and validates the plan at `path` (and the device lists it names).
///
/// Relative paths in the plan are resolved against the plan file's folder. Nothing but the plan
/// and its device lists is read; nothing is written.
pub fn load(path: &Path) -> Result<Plan, PlanError> {
    let text = std::fs::read_to_string(path).map_err(|e| PlanError {
        path: path.to_path_buf(),
        line: None,
        column: None,
        message: format!("cannot read the plan: {e}"),
    })?;
    parse(path, &text)
}

/// Parses and validates plan `text` as if it had been read from `path`.
///
/// `path` is used in error messages and to resolve the plan's relative paths (store, key file,
/// device lists) against `path.parent()`. Device lists are read from disk.
pub fn parse(path: &Path, text: &str) -> Result<Plan, PlanError> {
    let raw: raw::RawPlan = toml::from_str(text).map_err(|e| {
        let span = e.span();
        PlanError::at_span(path, text, span, e.message().to_string())
    })?;
    validate::validate(path, text, raw)
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
