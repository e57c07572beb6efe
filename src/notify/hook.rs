//! The hook: a command (argv, no shell) run once per delivery with one JSON document on stdin.
//! It succeeds when it exits 0 within its timeout; anything else is a failed delivery.

use crate::plan::HookConfig;
use std::io::{Read, Write};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Most of the hook's stderr kept for the error message.
const STDERR_KEPT: u64 = 4096;

/// Runs the hook with `input` on stdin. `secret_vars` are removed from its environment (the SMTP
/// password and the store key are none of the hook's business).
pub fn run(cfg: &HookConfig, input: Vec<u8>, secret_vars: &[String]) -> Result<(), String> {
    run_holding(cfg, input, secret_vars, None)
}

/// [`run`], with `held` open in the hook (and whatever it starts) as well as here: a lock on it
/// then lasts while any of them runs, also after certroll is killed. The delivery's PFX folder
/// is locked so (`backend::azure::delivery`); every other file stays closed to the hook.
pub fn run_holding(
    cfg: &HookConfig,
    input: Vec<u8>,
    secret_vars: &[String],
    held: Option<&std::fs::File>,
) -> Result<(), String> {
    let prog = &cfg.command[0];
    let name = format!("hook `{prog}`");
    let mut cmd = Command::new(prog);
    cmd.args(&cfg.command[1..])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    for var in secret_vars {
        cmd.env_remove(var);
    }
    if let Some(file) = held {
        use std::os::fd::AsRawFd;
        use std::os::unix::process::CommandExt;
        let fd = file.as_raw_fd();
        // SAFETY: between fork and exec the closure only calls fcntl, which is
        // async-signal-safe, on a descriptor this process holds open for the whole call.
        unsafe {
            cmd.pre_exec(move || {
                // Rust opens every file close-on-exec; this one alone stays open in the hook.
                if libc::fcntl(fd, libc::F_SETFD, 0) == -1 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
    }
    let mut child = cmd.spawn().map_err(|e| format!("{name}: cannot start it: {e}"))?;
    let mut stdin = child.stdin.take().expect("piped stdin");
    // Write from a thread: a hook that does not read its input must not block certroll.
    std::thread::spawn(move || {
        let _ = stdin.write_all(&input);
    });
    let mut stderr = child.stderr.take().expect("piped stderr");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = (&mut stderr).take(STDERR_KEPT).read_to_end(&mut buf);
        // Drain the rest so the hook never blocks on a full pipe.
        let _ = std::io::copy(&mut stderr, &mut std::io::sink());
        let _ = tx.send(buf);
    });
    let timeout = Duration::from_secs(u64::from(cfg.timeout_secs));
    let deadline = Instant::now() + timeout;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(20)),
            Ok(None) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!(
                    "{name}: killed after its timeout of {}s",
                    cfg.timeout_secs
                ));
            }
            Err(e) => return Err(format!("{name}: {e}")),
        }
    };
    if status.success() {
        return Ok(());
    }
    let stderr = rx.recv_timeout(Duration::from_secs(1)).unwrap_or_default();
    let stderr = String::from_utf8_lossy(&stderr);
    let last = stderr
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("")
        .trim();
    Err(if last.is_empty() {
        format!("{name}: {status}")
    } else {
        format!("{name}: {status}: {last}")
    })
}
