//! `init`: writes a commented starter plan.

use crate::error::input;
use anyhow::{Context as _, Result};
use std::path::Path;

/// The starter plan (the quickstart example, which the test suite keeps valid).
pub const STARTER_PLAN: &str = include_str!("../../examples/quickstart.toml");

/// Writes the starter plan to `path`; refuses to overwrite unless `force`.
pub fn init(path: &Path, force: bool) -> Result<()> {
    use crate::fsutil::{Landing, classify_landing, landing_path};
    let landing = landing_path(path).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => input(format!(
            "{}: the folder {} does not exist",
            path.display(),
            path.parent().map(|p| p.display().to_string()).unwrap_or_default()
        )),
        _ => input(format!("{}: {e}", path.display())),
    })?;
    match classify_landing(&landing).map_err(|e| input(format!("{}: {e}", path.display())))? {
        Landing::Store => {
            return Err(input(format!(
                "{} holds a certroll store or store key; init never replaces it, even with --force",
                path.display()
            )));
        }
        Landing::Directory | Landing::Stream | Landing::Other => {
            return Err(input(format!("{} is not a regular file", path.display())));
        }
        Landing::New | Landing::Regular => {}
    }
    if path.exists() && !force {
        return Err(input(format!(
            "{} already exists (use --force to overwrite it)",
            path.display()
        )));
    }
    crate::fsutil::write_atomic(path, STARTER_PLAN.as_bytes(), false)
        .with_context(|| format!("writing {}", path.display()))
}
