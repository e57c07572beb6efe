//! Filesystem helpers: files that hold secrets, output files, and bounded reads of inputs.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

/// Creates a new file readable and writable by its owner only (0600). Fails if it exists.
pub fn create_private(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
}

/// Syncs a directory, so that a rename or link inside it survives a crash.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(or_working_dir(dir))?.sync_all()
}

/// `dir`, or the working directory when it is empty (the parent of a bare file name).
fn or_working_dir(dir: &Path) -> &Path {
    if dir.as_os_str().is_empty() {
        Path::new(".")
    } else {
        dir
    }
}

/// The folder `path` is in (the working directory for a bare file name).
fn folder_of(path: &Path) -> &Path {
    path.parent().map_or(Path::new("."), or_working_dir)
}

fn temp_beside(path: &Path) -> (PathBuf, PathBuf) {
    let dir = folder_of(path).to_path_buf();
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.certroll-tmp-{}", std::process::id()));
    (dir, tmp)
}

/// Removes the temporary files that [`write_atomic`], [`create_atomic`] or a store creation
/// left beside `path` when a kill cut them off (`.NAME.certroll-tmp-PID`,
/// `.NAME.certroll-new-PID` and its `-journal`), once they are older than `age`, so a creation
/// still under way in another process is left alone.
pub fn remove_stale_temps(path: &Path, age: std::time::Duration) {
    let (Some(dir), Some(name)) = (path.parent(), path.file_name()) else {
        return;
    };
    let dir = or_working_dir(dir);
    let name = name.to_string_lossy();
    let prefixes = [format!(".{name}.certroll-tmp-"), format!(".{name}.certroll-new-")];
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let file = entry.file_name();
        let file = file.to_string_lossy();
        if !prefixes.iter().any(|p| file.starts_with(p.as_str())) {
            continue;
        }
        let old = entry
            .metadata()
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| t.elapsed().ok())
            .is_some_and(|elapsed| elapsed >= age);
        if old {
            let _ = std::fs::remove_file(entry.path());
        }
    }
}

/// Creates `tmp` (it must not exist) with `bytes` and syncs it, mode 0600 when `private`,
/// else 0644; the file is closed on return.
fn write_synced(tmp: &Path, bytes: &[u8], private: bool) -> io::Result<()> {
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(if private { 0o600 } else { 0o644 })
        .open(tmp)?;
    file.write_all(bytes)?;
    file.sync_all()
}

/// Writes `bytes` to `path` atomically (temporary file, fsync, rename, directory fsync), mode
/// 0600 when `private`. On any failure the temporary file is removed.
pub fn write_atomic(path: &Path, bytes: &[u8], private: bool) -> io::Result<()> {
    let (dir, tmp) = temp_beside(path);
    let _ = std::fs::remove_file(&tmp);
    let result = (|| {
        write_synced(&tmp, bytes, private)?;
        std::fs::rename(&tmp, path)?;
        sync_dir(&dir)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// Creates `path` with `bytes` only if it does not exist, crash-atomically: the content is
/// written and synced under a temporary name, then hard-linked into place (which fails if
/// `path` appeared meanwhile), and the directory is synced. After a crash `path` either does
/// not exist or holds all of `bytes`.
pub fn create_atomic(path: &Path, bytes: &[u8], private: bool) -> io::Result<()> {
    let (dir, tmp) = temp_beside(path);
    let _ = std::fs::remove_file(&tmp);
    let result = (|| {
        write_synced(&tmp, bytes, private)?;
        std::fs::hard_link(&tmp, path)?;
        sync_dir(&dir)
    })();
    let _ = std::fs::remove_file(&tmp);
    result
}

/// Where a file written at `path` lands: its folder resolved (symlinks, `.` and `..`, relative to
/// the working directory) joined with its file name. Writing by rename replaces exactly that
/// directory entry, so two paths with the same landing path name the same file.
///
/// Errors: `NotFound` if the folder does not exist; `InvalidInput` if the path names no file
/// (`/`, `..`, empty).
pub fn landing_path(path: &Path) -> io::Result<PathBuf> {
    let invalid = || io::Error::new(io::ErrorKind::InvalidInput, "the path names no file");
    let name = match path.components().next_back() {
        Some(std::path::Component::Normal(name)) => name.to_os_string(),
        _ => return Err(invalid()),
    };
    Ok(std::fs::canonicalize(folder_of(path))?.join(name))
}

/// What an output path lands on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Landing {
    /// Nothing yet.
    New,
    /// A regular file (replaced atomically).
    Regular,
    /// A character device or FIFO (written to, never replaced).
    Stream,
    /// A directory.
    Directory,
    /// A regular file holding a certroll store (SQLite) or a store key (64 hex digits).
    Store,
    /// A block device or socket.
    Other,
}

/// Looks at what `landing` (from [`landing_path`]) is now, following a final symlink.
pub fn classify_landing(landing: &Path) -> io::Result<Landing> {
    let meta = match std::fs::metadata(landing) {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            // A dangling symlink is replaced like a new file.
            return Ok(Landing::New);
        }
        Err(e) => return Err(e),
    };
    let ft = meta.file_type();
    if ft.is_dir() {
        return Ok(Landing::Directory);
    }
    if ft.is_char_device() || ft.is_fifo() {
        return Ok(Landing::Stream);
    }
    if !ft.is_file() {
        return Ok(Landing::Other);
    }
    if looks_like_state(landing, meta.len()) {
        return Ok(Landing::Store);
    }
    Ok(Landing::Regular)
}

/// Whether a regular file holds a SQLite database or a store key: nothing certroll writes as
/// output looks like either.
fn looks_like_state(path: &Path, len: u64) -> bool {
    use std::io::Read;
    let Ok(mut f) = File::open(path) else {
        return false;
    };
    let mut head = [0u8; 66];
    let mut n = 0;
    while n < head.len() {
        match f.read(&mut head[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(_) => return false,
        }
    }
    let head = &head[..n];
    if head.starts_with(b"SQLite format 3\0") {
        return true;
    }
    let key = head.strip_suffix(b"\n").unwrap_or(head);
    (len == 64 || len == 65) && key.len() == 64 && key.iter().all(u8::is_ascii_hexdigit)
}

/// Writes an output file: a character device or FIFO is written to in place (a FIFO nobody reads
/// is refused at once instead of blocking), anything else is replaced atomically
/// ([`write_atomic`]).
pub fn write_output(path: &Path, bytes: &[u8], private: bool) -> io::Result<()> {
    let stream = std::fs::metadata(path)
        .map(|m| m.file_type().is_char_device() || m.file_type().is_fifo())
        .unwrap_or(false);
    if !stream {
        return write_atomic(path, bytes, private);
    }
    let mut file = OpenOptions::new()
        .write(true)
        .custom_flags(libc_o_nonblock())
        .open(path)
        .map_err(|e| {
            if e.raw_os_error() == Some(libc::ENXIO) {
                // A FIFO with no reader.
                io::Error::new(io::ErrorKind::InvalidInput, "nothing is reading this FIFO")
            } else {
                e
            }
        })?;
    write_all_retrying(&mut file, bytes)
}

fn libc_o_nonblock() -> i32 {
    libc::O_NONBLOCK
}

/// `write_all` on a non-blocking descriptor: waits briefly while a pipe is full.
fn write_all_retrying(file: &mut File, mut bytes: &[u8]) -> io::Result<()> {
    let mut stalled = 0u32;
    while !bytes.is_empty() {
        match file.write(bytes) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => {
                bytes = &bytes[n..];
                stalled = 0;
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                stalled += 1;
                if stalled > 6000 {
                    return Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        "the reader stopped reading for 60 s",
                    ));
                }
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// The largest certificate, key, PKCS#12, CSR or backup file read (a vault backup of a certificate
/// with many versions is the largest of them, a few megabytes).
pub const MAX_INPUT_FILE: u64 = 64 << 20;

/// Reads a whole input file, refusing (with `InvalidInput`) anything that is not a regular file
/// or is larger than `limit` bytes, so that a FIFO, a device or a huge file neither blocks nor
/// exhausts memory.
pub fn read_bounded(path: &Path, limit: u64) -> io::Result<Vec<u8>> {
    use std::io::Read;
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(libc_o_nonblock())
        .open(path)?;
    let meta = file.metadata()?;
    if !meta.file_type().is_file() {
        let what = if meta.is_dir() {
            "a directory"
        } else {
            "not a regular file"
        };
        return Err(io::Error::new(io::ErrorKind::InvalidInput, what));
    }
    if meta.len() > limit {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("larger than {limit} bytes ({} bytes)", meta.len()),
        ));
    }
    let mut out = Vec::with_capacity(meta.len() as usize);
    file.take(limit + 1).read_to_end(&mut out)?;
    if out.len() as u64 > limit {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("larger than {limit} bytes"),
        ));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn landing_paths_resolve_dot_dot_and_symlinked_folders() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("state");
        std::fs::create_dir(&state).unwrap();
        std::fs::create_dir(dir.path().join("sub")).unwrap();
        std::os::unix::fs::symlink(&state, dir.path().join("link")).unwrap();
        let want = landing_path(&state.join("state.db")).unwrap();
        for p in ["sub/../state/./state.db", "link/state.db", "state/state.db"] {
            assert_eq!(landing_path(&dir.path().join(p)).unwrap(), want, "{p}");
        }
        assert_eq!(
            landing_path(&dir.path().join("missing/x")).unwrap_err().kind(),
            io::ErrorKind::NotFound
        );
        assert_eq!(
            landing_path(Path::new("/")).unwrap_err().kind(),
            io::ErrorKind::InvalidInput
        );
    }

    #[test]
    fn stores_and_keys_are_recognised_and_other_files_are_not() {
        let dir = tempfile::tempdir().unwrap();
        let f = |name: &str, bytes: &[u8]| {
            let p = dir.path().join(name);
            std::fs::write(&p, bytes).unwrap();
            classify_landing(&p).unwrap()
        };
        assert_eq!(f("db", b"SQLite format 3\0rest"), Landing::Store);
        assert_eq!(
            f("key", format!("{}\n", "A1".repeat(32)).as_bytes()),
            Landing::Store
        );
        assert_eq!(f("pem", b"-----BEGIN CERTIFICATE-----\n"), Landing::Regular);
        assert_eq!(f("hex65", "A1".repeat(40).as_bytes()), Landing::Regular);
        assert_eq!(classify_landing(&dir.path().join("none")).unwrap(), Landing::New);
        assert_eq!(classify_landing(dir.path()).unwrap(), Landing::Directory);
        assert_eq!(classify_landing(Path::new("/dev/null")).unwrap(), Landing::Stream);
    }

    #[test]
    fn stale_temporary_files_of_a_store_are_removed_and_others_kept() {
        let dir = tempfile::tempdir().unwrap();
        let store = dir.path().join("state.db");
        for f in [
            ".state.db.certroll-new-123",
            ".state.db.certroll-new-123-journal",
            ".state.db.certroll-tmp-9",
            "keep.txt",
            ".other.certroll-new-1",
        ] {
            std::fs::write(dir.path().join(f), b"x").unwrap();
        }
        remove_stale_temps(&store, std::time::Duration::from_secs(3600));
        assert_eq!(
            std::fs::read_dir(dir.path()).unwrap().count(),
            5,
            "young files are kept"
        );
        remove_stale_temps(&store, std::time::Duration::ZERO);
        let mut left: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        left.sort();
        assert_eq!(left, [".other.certroll-new-1", "keep.txt"]);
    }

    #[test]
    fn a_failed_atomic_write_leaves_no_temporary_file() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("out");
        std::fs::create_dir(&target).unwrap();
        std::fs::write(target.join("x"), b"keep").unwrap();
        assert!(write_atomic(&target, b"secret", true).is_err());
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("out")]);
    }

    #[test]
    fn bounded_reads_refuse_fifos_devices_and_large_files_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let big = dir.path().join("big");
        std::fs::write(&big, vec![b'a'; 2048]).unwrap();
        assert_eq!(read_bounded(&big, 4096).unwrap().len(), 2048);
        assert_eq!(
            read_bounded(&big, 1024).unwrap_err().kind(),
            io::ErrorKind::InvalidInput
        );
        assert_eq!(
            read_bounded(Path::new("/dev/zero"), 1024).unwrap_err().kind(),
            io::ErrorKind::InvalidInput
        );
        let fifo = dir.path().join("fifo");
        let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        assert_eq!(
            read_bounded(&fifo, 1024).unwrap_err().kind(),
            io::ErrorKind::InvalidInput
        );
        assert_eq!(
            read_bounded(dir.path(), 1024).unwrap_err().kind(),
            io::ErrorKind::InvalidInput
        );
    }

    #[test]
    fn a_fifo_without_a_reader_is_refused_instead_of_blocking() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("fifo");
        let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        let err = write_output(&fifo, b"x", false).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
        assert!(std::fs::metadata(&fifo).unwrap().file_type().is_fifo());
    }
}
