//! Rendering reports: human text, or exactly one JSON document per command, to any writer.
//!
//! With `-o json` a failed command prints an error document instead of its report:
//! `{"error": {"message", "kind", "exit_code"}}`. Stdout is written only through [`Stdout`], which
//! remembers whether anything went out, so an error that comes after the command's own document
//! (or part of it) never adds a second one.

use crate::ops::issue::IssueReport;
use crate::ops::status::{DeviceStatus, StatusHead};
use crate::pki::CertInfo;
use serde::Serialize;
use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};

/// Devices a human `status` lists before summarising the rest.
const HUMAN_DEVICE_ROWS: usize = 200;

/// `-o human|json`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum Format {
    /// Readable text.
    #[default]
    Human,
    /// One JSON document.
    Json,
}

/// Set once any byte reached stdout. Process-wide because stdout is: every verb, the notify step
/// after it and the error path in `cli::main` must agree on whether a document is already out.
static STDOUT_WRITTEN: AtomicBool = AtomicBool::new(false);

/// The process's stdout, remembering that it was written to (see [`stdout_written`]).
pub struct Stdout(std::io::StdoutLock<'static>);

/// Locks stdout for a command's output.
pub fn stdout() -> Stdout {
    Stdout(std::io::stdout().lock())
}

/// Whether this process has written anything to stdout through [`Stdout`].
pub fn stdout_written() -> bool {
    STDOUT_WRITTEN.load(Ordering::SeqCst)
}

impl Write for Stdout {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.0.write(buf).map_err(unwritable)?;
        if n > 0 {
            STDOUT_WRITTEN.store(true, Ordering::SeqCst);
        }
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.0.flush().map_err(unwritable)
    }
}

/// A failed write of a command's output to stdout (a full disk, a closed pipe). Its message says
/// that it is the output, as for help and version text ("cannot write the output: No space left
/// on device"): the bare OS error could be any file's. The [`std::io::Error`] that carries it
/// keeps the OS error's kind, so a closed pipe (`| head`) is still told apart.
#[derive(Debug)]
pub struct OutputError(std::io::Error);

impl std::fmt::Display for OutputError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "cannot write the output: {}", self.0)
    }
}

impl std::error::Error for OutputError {}

/// `e` as an [`OutputError`] of the same kind (once: a retried write's error is not wrapped twice).
fn unwritable(e: std::io::Error) -> std::io::Error {
    if e.kind() == std::io::ErrorKind::Interrupted
        || e.get_ref().is_some_and(|inner| inner.is::<OutputError>())
    {
        return e;
    }
    std::io::Error::new(e.kind(), OutputError(e))
}

/// The body of a JSON error document: `{"error": ErrorBody}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ErrorBody {
    /// The whole error chain as text, as stderr shows it after `error: ` (clap's usage
    /// messages span several lines).
    pub message: String,
    /// Why it failed: `usage` (the command line was refused), `input` (a plan, flag, file or
    /// value to fix; nothing was changed) or `failed` (failed part-way; a rerun resumes).
    pub kind: &'static str,
    /// The code the process exits with (for `check`, 3: unknown).
    pub exit_code: u8,
}

impl ErrorBody {
    /// The body for an error a verb returned, with the exit code `cli::main` gives it.
    pub fn from_error(err: &anyhow::Error) -> ErrorBody {
        let failure = crate::error::classify(err);
        ErrorBody {
            message: crate::error::message(err),
            kind: failure.name(),
            exit_code: crate::error::exit_code(failure),
        }
    }
}

#[derive(Serialize)]
struct ErrorDocument<'a> {
    error: &'a ErrorBody,
}

/// Prints the error document on stdout, unless stdout already holds the command's own document
/// (or part of it): a script must never find two. Returns whether it printed.
pub fn print_error_document(body: &ErrorBody) -> std::io::Result<bool> {
    if stdout_written() {
        return Ok(false);
    }
    let mut out = stdout();
    serde_json::to_writer_pretty(&mut out, &ErrorDocument { error: body })?;
    writeln!(out)?;
    out.flush()?;
    Ok(true)
}

/// Writes reports.
pub struct Printer<W: Write> {
    out: W,
    format: Format,
    quiet: bool,
}

impl<W: Write> Printer<W> {
    /// A printer on `out`.
    pub fn new(out: W, format: Format, quiet: bool) -> Self {
        Printer { out, format, quiet }
    }

    /// The output format.
    pub fn format(&self) -> Format {
        self.format
    }

    /// Writes any serializable value as the command's JSON document.
    pub fn json<T: Serialize>(&mut self, value: &T) -> std::io::Result<()> {
        serde_json::to_writer_pretty(&mut self.out, value)?;
        writeln!(self.out)
    }

    /// A line of human output (suppressed by `-q`).
    pub fn line(&mut self, text: impl std::fmt::Display) -> std::io::Result<()> {
        if self.format == Format::Human && !self.quiet {
            writeln!(self.out, "{text}")?;
        }
        Ok(())
    }

    /// The report of `issue`.
    pub fn issue_report(&mut self, report: &IssueReport) -> std::io::Result<()> {
        if self.format == Format::Json {
            return self.json(report);
        }
        if report.deliveries_owed > 0 {
            // Work left that a rerun finishes: shown even with -q.
            writeln!(
                self.out,
                "{} device(s) still owed their new certificate: the delivery failed; the next `certroll issue` \
                 or roll delivers it (`certroll check` lists them)",
                report.deliveries_owed
            )?;
        }
        for held in &report.held_back_deliveries {
            self.line(format!("{}: delivery held back: {}", held.target, held.reason))?;
        }
        if report.nothing_to_do() {
            return self.line("Nothing to do: everything the plan declares already exists.");
        }
        if report.steps.is_empty() {
            self.line("Nothing else to do: everything else the plan declares already exists.")?;
        } else {
            let verb = if report.dry_run { "Would run" } else { "Done" };
            self.line(format!("{verb} {} step(s):", report.steps.len()))?;
            for (i, step) in report.steps.iter().enumerate() {
                self.line(format!(
                    "{:>3}. [{}] {}: {}",
                    i + 1,
                    step.action,
                    step.target,
                    step.detail
                ))?;
            }
        }
        // Each device left alone needs an operator: shown even with -q, as rejections are.
        for d in &report.devices {
            writeln!(self.out, "{}: not issued: {}", d.target, d.steps.join("; "))?;
        }
        if report.dry_run {
            self.line("Dry run: nothing was changed.")?;
        }
        if !report.rejected.is_empty() {
            // Rejections matter even with -q.
            writeln!(
                self.out,
                "{} device(s) were refused by the enrollment service:",
                report.rejected.len()
            )?;
            for r in report.rejected.iter().take(20) {
                writeln!(self.out, "  {}: {}", r.device, r.reason)?;
            }
        }
        Ok(())
    }

    /// Streams the `status` report: the head, then each device.
    pub fn status<F>(&mut self, head: &StatusHead, devices: F) -> anyhow::Result<()>
    where
        F: FnOnce(&mut dyn FnMut(DeviceStatus) -> anyhow::Result<()>) -> anyhow::Result<()>,
    {
        match self.format {
            Format::Json => {
                // One document, with the devices written as they are read.
                let head_json = serde_json::to_value(head)?;
                write!(
                    self.out,
                    "{{\n  \"cas\": {},\n  \"groups\": {},\n  \"enrollments\": {},\n  \"devices\": [",
                    serde_json::to_string(&head_json["cas"])?,
                    serde_json::to_string(&head_json["groups"])?,
                    serde_json::to_string(&head_json["enrollments"])?
                )?;
                let mut first = true;
                let out = &mut self.out;
                let streamed = devices(&mut |d| {
                    write!(
                        out,
                        "{}\n    {}",
                        if first { "" } else { "," },
                        serde_json::to_string(&d)?
                    )?;
                    first = false;
                    Ok(())
                });
                if let Err(err) = streamed {
                    // The head and some devices are already out, so no separate error document
                    // can follow: close this one with the error in it rather than leave it cut
                    // off. If writing to stdout is what failed, this fails too, and is ignored.
                    let _ = write!(
                        self.out,
                        "\n  ],\n  \"error\": {}\n}}\n",
                        serde_json::to_string(&ErrorBody::from_error(&err))?
                    );
                    return Err(err);
                }
                writeln!(self.out, "\n  ]\n}}")?;
            }
            Format::Human => {
                let quiet = self.quiet;
                let out = &mut self.out;
                if quiet {
                    return devices(&mut |_| Ok(()));
                }
                // A target's status (`status device:ID`) may show no CA: no header over nothing.
                if !head.cas.is_empty() {
                    writeln!(out, "CAs")?;
                }
                for ca in &head.cas {
                    let verified = match ca.verified {
                        Some(true) => " verified",
                        Some(false) => " NOT verified",
                        None => "",
                    };
                    writeln!(
                        out,
                        "  {:<20} {}{}",
                        ca.name,
                        if ca.deleted {
                            "(certificate deleted in the vault; `vault recover` brings it back)".to_string()
                        } else {
                            cert_line(ca.cert.as_ref())
                        },
                        verified
                    )?;
                }
                if !head.groups.is_empty() {
                    writeln!(out, "Enrollment groups")?;
                }
                for g in &head.groups {
                    let status = g.status.map(|s| s.as_str()).unwrap_or("not created");
                    writeln!(
                        out,
                        "  {:<20} {status}, hub {}, {} device(s)",
                        g.name,
                        g.hub.as_deref().unwrap_or("-"),
                        g.device_count
                    )?;
                    writeln!(
                        out,
                        "    primary:   {}",
                        slot_line(g.primary.as_ref(), &g.foreign, "primary")
                    )?;
                    writeln!(
                        out,
                        "    secondary: {}",
                        slot_line(g.secondary.as_ref(), &g.foreign, "secondary")
                    )?;
                    if let Some(remedy) = &g.foreign_remedy {
                        writeln!(out, "    {remedy}")?;
                    }
                }
                if !head.enrollments.is_empty() {
                    writeln!(out, "Individual enrollments")?;
                }
                for e in &head.enrollments {
                    let status = e.status.map(|s| s.as_str()).unwrap_or("not created");
                    writeln!(
                        out,
                        "  {:<20} {status}, hub {}",
                        e.name,
                        e.hub.as_deref().unwrap_or("-")
                    )?;
                    writeln!(
                        out,
                        "    primary:   {}",
                        slot_line(e.primary.as_ref(), &e.foreign, "primary")
                    )?;
                    writeln!(
                        out,
                        "    secondary: {}",
                        slot_line(e.secondary.as_ref(), &e.foreign, "secondary")
                    )?;
                }
                writeln!(out, "Devices")?;
                writeln!(
                    out,
                    "  {:<24} {:<12} {:<10} {:<20} {:<41} NOT AFTER",
                    "ID", "OWNER", "REG", "HUB", "THUMBPRINT"
                )?;
                let mut shown = 0usize;
                let mut more = 0u64;
                // The owner marks the rows use, for the legend: (`*`, `!`).
                let mut marks = (false, false);
                devices(&mut |d| {
                    if shown == HUMAN_DEVICE_ROWS {
                        more += 1;
                        return Ok(());
                    }
                    shown += 1;
                    let mut owner = d
                        .group
                        .as_deref()
                        .or(d.enrollment.as_deref())
                        .unwrap_or("-")
                        .to_string();
                    if let Some(e) = &d.individual_enrollment {
                        if e.status == Some(crate::backend::types::Status::Disabled) {
                            marks.1 = true;
                            owner.push('!');
                        } else {
                            marks.0 = true;
                            owner.push('*');
                        }
                    }
                    let reg = d.registration.as_ref().map(|r| r.status.as_str()).unwrap_or("-");
                    let hub = d
                        .registration
                        .as_ref()
                        .and_then(|r| r.hub.as_deref())
                        .unwrap_or("-");
                    let (tp, exp) = match &d.installed {
                        Some(c) => (c.thumbprint.as_str(), crate::clock::rfc3339(c.not_after)),
                        None if d.installed_deleted => ("(deleted in the vault)", String::new()),
                        None if d.installed_purged => ("(purged from the vault)", String::new()),
                        None if d.pending.is_some() => ("(none presented yet)", String::new()),
                        None => ("(no certificate)", String::new()),
                    };
                    writeln!(
                        out,
                        "  {:<24} {:<12} {:<10} {:<20} {:<41} {}",
                        d.id, owner, reg, hub, tp, exp
                    )?;
                    // A failed last attempt says why, as DPS records it (`-o json` has the same).
                    if let Some(r) = d.registration.as_ref().filter(|r| r.status != "assigned") {
                        let code = r
                            .error_code
                            .map(|c| format!("errorCode {c}: "))
                            .unwrap_or_default();
                        let when = r
                            .updated
                            .map(|t| format!(" (at {})", crate::clock::rfc3339(t)))
                            .unwrap_or_default();
                        writeln!(
                            out,
                            "    last registration {}{when}: {code}{}",
                            r.status,
                            r.error.as_deref().unwrap_or("no reason recorded")
                        )?;
                    }
                    // A device another client cut off is told so, not `pending`: its
                    // certificate waits for nothing certroll does.
                    if let Some(why) = &d.cannot_connect {
                        writeln!(out, "    cannot connect: {why}")?;
                    } else if let Some(why) = &d.breach_open {
                        writeln!(out, "    breach open: {why}")?;
                    } else if let Some(p) = &d.pending {
                        writeln!(
                            out,
                            "    issued {} (until {}): {}",
                            p.cert.thumbprint,
                            crate::clock::rfc3339(p.cert.not_after),
                            p.note
                        )?;
                    }
                    for f in &d.foreign {
                        let id = d.enrollment.as_deref().unwrap_or(&d.id);
                        writeln!(out, "    {}", f.describe(id))?;
                        writeln!(
                            out,
                            "    {}",
                            crate::backend::types::ForeignCertificate::remedy(id)
                        )?;
                    }
                    if d.installed_purged {
                        writeln!(
                            out,
                            "    its certificate dev-{} was purged from the vault; the device still holds it, but \
                             nothing can renew it: `certroll issue device:{}` issues a new one",
                            d.id, d.id
                        )?;
                    }
                    Ok(())
                })?;
                if more > 0 {
                    writeln!(
                        out,
                        "  ... and {more} more device(s): -o json lists all, device:ID shows one"
                    )?;
                }
                // The legend names only the marks the rows above use.
                if marks.0 {
                    writeln!(
                        out,
                        "  * an individual enrollment (after a breach) takes precedence over the group"
                    )?;
                }
                if marks.1 {
                    writeln!(
                        out,
                        "  ! a disabled individual enrollment (revoked) refuses the device"
                    )?;
                }
            }
        }
        Ok(())
    }
}

/// An enrollment slot: certroll's certificate, or one another client put there.
fn slot_line(
    cert: Option<&CertInfo>,
    foreign: &[crate::backend::types::ForeignCertificate],
    slot: &str,
) -> String {
    match foreign.iter().find(|f| f.slot == slot) {
        Some(f) if cert.is_none() => format!(
            "{} ({}) NOT ISSUED BY CERTROLL: another client put it there",
            f.thumbprint,
            if f.subject.is_empty() {
                "no subject given"
            } else {
                &f.subject
            }
        ),
        _ => cert_line(cert),
    }
}

fn cert_line(cert: Option<&CertInfo>) -> String {
    match cert {
        Some(c) => format!(
            "{} (serial {}, {} .. {})",
            c.thumbprint,
            crate::pki::inspect::serial_display_hex(&c.serial),
            crate::clock::rfc3339(c.not_before),
            crate::clock::rfc3339(c.not_after)
        ),
        None => "-".into(),
    }
}
