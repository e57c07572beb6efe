//! `init`: writes a commented starter plan.

use crate::error::input;
use anyhow::{Context as _, Result};
use std::path::Path;

/// The starter plan (the quickstart example, which the test suite keeps valid).
pub const STARTER_PLAN: &str = include_str!("../../examples/quickstart.toml");

/// Writes the starter plan to `path`; refuses to overwrite unless `force`.
pub fn init(path: &Path, force: bool) -> Result<()> {
    if path.exists() && !force {
        return Err(input(format!(
            "{} already exists (use --force to overwrite it)",
            path.display()
        )));
    }
    crate::fsutil::write_atomic(path, STARTER_PLAN.as_bytes(), false)
        .with_context(|| format!("writing {}", path.display()))
}
