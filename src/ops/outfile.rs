//! Where verbs write their output files (`--out`): never onto the state.
//!
//! An output path is checked before a verb changes anything: it may not land (after symlinks and
//! `..`) on the store, its key file, its WAL, SHM or lock files, or the plan, nor replace a file
//! that holds a certroll store or store key of another plan. A device node or FIFO is written
//! to, never replaced; a directory, a missing or read-only folder is bad input (exit 2).
//!
//! `--out -` is standard output, for every verb that writes a file; no file named `-` is ever
//! created. A private key (or a backup holding keys) is not printed on a terminal: it goes to
//! a pipe or a file.

use crate::error::input;
use crate::fsutil::{self, Landing};
use crate::plan::{BackendConfig, Plan};
use anyhow::Result;
use std::path::{Path, PathBuf};

use super::BackendSettings;

/// Whether `--out` names standard output (`-`).
pub fn is_stdout(out: &Path) -> bool {
    out.as_os_str() == "-"
}

/// Refuses (exit 2) to print secrets on a terminal, where they would stay in the scrollback:
/// a private key goes to a pipe or a file. Called before a verb changes anything.
pub fn refuse_private_to_terminal(out: &Path, private: bool) -> Result<()> {
    use std::io::IsTerminal as _;
    if private && is_stdout(out) && std::io::stdout().is_terminal() {
        return Err(input(
            "--out - would print a private key on the terminal; pipe it to a program or name a file with --out",
        ));
    }
    Ok(())
}

fn write_stdout(bytes: &[u8], private: bool) -> Result<()> {
    use std::io::Write as _;
    refuse_private_to_terminal(Path::new("-"), private)?;
    let mut out = std::io::stdout().lock();
    out.write_all(bytes)
        .and_then(|()| out.flush())
        .map_err(|e| anyhow::anyhow!("writing to standard output: {e}"))
}

/// The files of a plan that no output may replace, by where they land.
#[derive(Debug)]
pub struct Protected {
    files: Vec<(PathBuf, &'static str)>,
}

impl Protected {
    /// The plan file, its store (with `-wal`, `-shm`, `.lock`) and the store key file (the plan's,
    /// the `--key-file` override, and the default beside the store), each with the `.new` file a
    /// rekey keeps its new key in.
    pub fn of(plan: &Plan, settings: &BackendSettings) -> Protected {
        let mut files: Vec<(PathBuf, &'static str)> = vec![(plan.path.clone(), "the plan")];
        let BackendConfig::Local { path, key_file } = &plan.backend;
        files.push((path.clone(), "the store"));
        for suffix in ["-wal", "-shm", "-journal", ".lock"] {
            files.push((with_suffix(path, suffix), "a file of the store"));
        }
        let default_key = with_suffix(path, ".key");
        for key in [Some(&default_key), key_file.as_ref(), settings.key_file.as_ref()]
            .into_iter()
            .flatten()
        {
            files.push((key.clone(), "the store key"));
            // A rekey cut off between its commit and its rename keeps the only working key here.
            files.push((crate::store::rekey::pending_key_file(key), "the store's new key"));
        }
        Protected {
            files: files
                .into_iter()
                .map(|(p, what)| (fsutil::landing_path(&p).unwrap_or(p), what))
                .collect(),
        }
    }

    /// Refuses (exit 2) an output path that would replace one of these files or another store,
    /// or that cannot be written: a directory, a folder that does not exist, a block device.
    pub fn check(&self, out: &Path) -> Result<()> {
        if is_stdout(out) {
            return Ok(());
        }
        let shown = out.display();
        let landing = fsutil::landing_path(out).map_err(|e| output_input_error(out, &e))?;
        if let Some((_, what)) = self.files.iter().find(|(p, _)| *p == landing) {
            return Err(input(format!(
                "--out {shown} is {what} ({}); choose another file",
                landing.display()
            )));
        }
        match fsutil::classify_landing(&landing).map_err(|e| output_input_error(out, &e))? {
            Landing::New | Landing::Regular | Landing::Stream => Ok(()),
            Landing::Directory => Err(input(format!("--out {shown} is a directory; name a file"))),
            Landing::Store => Err(input(format!(
                "--out {shown} holds a certroll store or store key; refusing to replace it"
            ))),
            Landing::Other => Err(input(format!(
                "--out {shown} is a block device or socket; name a file"
            ))),
        }
    }

    /// Checks `out` and writes `bytes` there (mode 0600 when `private`): atomically for a file,
    /// straight into a character device or FIFO. A write that fails leaves no temporary file.
    pub fn write(&self, out: &Path, bytes: &[u8], private: bool) -> Result<()> {
        if is_stdout(out) {
            return write_stdout(bytes, private);
        }
        self.check(out)?;
        fsutil::write_output(out, bytes, private).map_err(|e| output_error(out, e))
    }
}

fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.file_name().map(|n| n.to_os_string()).unwrap_or_default();
    name.push(suffix);
    path.with_file_name(name)
}

/// An error writing an output: the operator's to fix (exit 2) when it is about the path.
fn output_error(out: &Path, e: std::io::Error) -> anyhow::Error {
    use std::io::ErrorKind::*;
    match e.kind() {
        NotFound | PermissionDenied | IsADirectory | NotADirectory | ReadOnlyFilesystem | InvalidInput
        | AlreadyExists => output_input_error(out, &e),
        _ => anyhow::anyhow!("writing {}: {e}", out.display()),
    }
}

fn output_input_error(out: &Path, e: &std::io::Error) -> anyhow::Error {
    if e.kind() == std::io::ErrorKind::NotFound {
        let dir = out
            .parent()
            .filter(|d| !d.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        return input(format!(
            "--out {}: the folder {} does not exist",
            out.display(),
            dir.display()
        ));
    }
    input(format!("--out {}: {e}", out.display()))
}
