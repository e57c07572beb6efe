//! Exit codes, and the one place where an error's cause decides the code.
//!
//! | code | meaning |
//! |---|---|
//! | 0 | done, or nothing to do |
//! | 1 | failed part-way; a rerun resumes |
//! | 2 | bad input (plan, flags, files, the environment's secrets; on azure a rejected credential, an untrusted TLS certificate or a host name that does not resolve on first contact, before anything remote was changed); nothing changed |
//!
//! `check` has its own monitoring codes (0 OK, 1 warning, 2 critical, 3 unknown).

/// The kind of failure, which decides the exit code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// Bad input: exit 2, nothing was changed.
    Input,
    /// Failed part-way: exit 1, a rerun resumes.
    Runtime,
}

impl Failure {
    /// The `kind` of a JSON error document. Scripts match on these names, so they never change.
    pub fn name(self) -> &'static str {
        match self {
            Failure::Input => "input",
            Failure::Runtime => "failed",
        }
    }
}

/// An input error: the user must fix a file, flag or value. Wrap any error with
/// [`input`] to make the CLI exit 2.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct InputError(pub String);

/// Makes an input error from a message.
pub fn input(message: impl Into<String>) -> anyhow::Error {
    anyhow::Error::new(InputError(message.into()))
}

/// Decides the exit code from the error chain.
pub fn classify(err: &anyhow::Error) -> Failure {
    for cause in err.chain() {
        if cause.is::<InputError>()
            || cause.is::<crate::plan::PlanError>()
            || matches!(
                cause.downcast_ref::<crate::backend::BackendError>(),
                Some(crate::backend::BackendError::Deleted(_))
            )
            || cause
                .downcast_ref::<crate::backend::BackendError>()
                .is_some_and(crate::backend::azure::observe::is_setup_failure)
        {
            return Failure::Input;
        }
        // A missing store, a missing or malformed key file, a store from a newer certroll:
        // the operator must fix a file or a flag; nothing was changed.
        use crate::store::{StoreError, seal::SealError};
        if let Some(
            StoreError::Missing(_)
            | StoreError::NotAFile(_)
            | StoreError::Empty { .. }
            | StoreError::EmptyKey { .. }
            | StoreError::Damaged { .. }
            | StoreError::Seal(SealError::NotAKeyFile { .. })
            | StoreError::NoKey { .. }
            | StoreError::TooNew { .. }
            | StoreError::WrongKey(_)
            | StoreError::Seal(SealError::BadKeyFile(_) | SealError::BadKeyEnv),
        ) = cause.downcast_ref::<StoreError>()
        {
            return Failure::Input;
        }
        // A damaged store file (truncated, garbled): no rerun can help; the operator restores it.
        if let Some(StoreError::Sqlite { source, .. }) = cause.downcast_ref::<StoreError>()
            && matches!(
                source.sqlite_error_code(),
                Some(rusqlite::ErrorCode::NotADatabase | rusqlite::ErrorCode::DatabaseCorrupt)
            )
        {
            return Failure::Input;
        }
        if let Some(SealError::BadKeyFile(_) | SealError::BadKeyEnv | SealError::NotAKeyFile { .. }) =
            cause.downcast_ref::<SealError>()
        {
            return Failure::Input;
        }
    }
    Failure::Runtime
}

/// An error and its causes as one line (`what: why: ...`), as `{:#}` prints it, but told once:
/// SQLite's own causes repeat what the store error already says ("database is locked: database
/// is locked: Error code 5: database is locked"), so the chain stops at a store's SQLite error.
pub fn message(err: &anyhow::Error) -> String {
    let mut out = String::new();
    // What a stopped run leaves open goes last, after the cause and its own advice.
    let left_open = err.downcast_ref::<LeftOpen>().map(|l| l.0.as_str());
    for cause in err.chain() {
        let text = cause.to_string();
        if Some(text.as_str()) == left_open {
            continue;
        }
        if !out.is_empty() {
            if out.contains(&text) {
                continue;
            }
            out.push_str(": ");
        }
        out.push_str(&text);
        // Through `BackendError::Store`, which is transparent, too.
        use crate::store::StoreError;
        let store = cause
            .downcast_ref::<StoreError>()
            .or_else(|| match cause.downcast_ref() {
                Some(crate::backend::BackendError::Store(e)) => Some(e),
                _ => None,
            });
        if matches!(store, Some(StoreError::Sqlite { .. })) {
            break;
        }
    }
    if let Some(left) = left_open {
        out.push_str("; ");
        out.push_str(left);
    }
    out
}

/// Context on the error of a run that stopped part-way and stays open in the journal: what
/// resumes it (see `ops::journal::Run::stopped`). [`message`] puts it after the cause.
#[derive(Debug)]
pub struct LeftOpen(pub String);

impl std::fmt::Display for LeftOpen {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// The process exit code for a failure.
pub fn exit_code(failure: Failure) -> u8 {
    match failure {
        Failure::Input => 2,
        Failure::Runtime => 1,
    }
}

/// A value quoted in a message, cut to a short prefix with control characters escaped: a
/// 50 MB "device id" or a pasted key never reaches the terminal or a log whole.
pub fn snippet(value: &str) -> String {
    const KEEP: usize = 40;
    let mut out: String = value.chars().take(KEEP).flat_map(char::escape_debug).collect();
    let total = value.chars().count();
    if total > KEEP {
        out.push_str(&format!("... ({total} characters)"));
    }
    out
}

/// A JSON value quoted in a message as the client wrote it (a string in backquotes, anything else
/// as JSON text), cut short as [`snippet`] cuts, without escaping its quotes.
pub fn json_snippet(value: &serde_json::Value) -> String {
    const KEEP: usize = 40;
    match value {
        serde_json::Value::String(s) => format!("`{}`", snippet(s)),
        other => {
            // JSON text escapes control characters itself.
            let text = other.to_string();
            let total = text.chars().count();
            let mut out: String = text.chars().take(KEEP).collect();
            if total > KEEP {
                out.push_str(&format!("... ({total} characters)"));
            }
            out
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn snippets_are_short_and_escaped() {
        assert_eq!(super::snippet("sensor-01"), "sensor-01");
        assert_eq!(super::snippet("a\nb\0"), "a\\nb\\0");
        let long = "x".repeat(50_000_000);
        let s = super::snippet(&long);
        assert!(s.len() < 80, "{s}");
        assert!(s.ends_with("(50000000 characters)"), "{s}");
    }
}
