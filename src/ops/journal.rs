//! The journal as the verbs use it: a mutating run records its planned steps in the store before
//! it carries out any of them, carries out each step as one unit of work that also marks the step
//! done, and closes the run at the end. Running the same command again while a run of it is open
//! (killed, or stopped by an error) resumes that run at its first step not done.
//!
//! For tests only, `CERTROLL_FAULT_AFTER_STEPS=N` aborts the process (like `kill -9`) right after
//! the N-th step of a run has been committed, so resume can be tested at every point, and
//! `CERTROLL_FAULT_BEFORE_STEP_COMMIT=N` aborts it once the N-th step's work is done but before
//! its unit of work commits: a remote service then holds what the step wrote, and the store
//! beside the plan does not.

use crate::backend::types::JournalStep;
use crate::backend::{Backend, in_one_unit};
use anyhow::Result;
use serde::Serialize;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use time::OffsetDateTime;

/// The environment variable of the fault-injection switch (tests only).
pub const FAULT_ENV: &str = "CERTROLL_FAULT_AFTER_STEPS";

/// The environment variable of the switch that aborts before a step's commit (tests only).
pub const FAULT_BEFORE_COMMIT_ENV: &str = "CERTROLL_FAULT_BEFORE_STEP_COMMIT";

/// Devices that cannot connect with the certificate they hold now once a step is done (until
/// they receive their new certificate).
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct CutOff {
    /// How many.
    pub count: u64,
    /// The first few, in id order.
    pub first: Vec<String>,
}

/// How many device ids a blast-radius report names.
pub const CUT_OFF_SHOWN: usize = 5;

impl CutOff {
    /// Nobody.
    pub fn none() -> CutOff {
        CutOff::default()
    }

    /// These devices (all of them counted, the first few named).
    pub fn of(ids: impl IntoIterator<Item = String>) -> CutOff {
        let mut all: Vec<String> = ids.into_iter().collect();
        all.sort();
        all.dedup();
        let count = all.len() as u64;
        all.truncate(CUT_OFF_SHOWN);
        CutOff { count, first: all }
    }
}

impl std::fmt::Display for CutOff {
    /// `3 device(s): a, b, c` (the first few named, `...` when there are more).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.count == 0 {
            return write!(f, "no devices");
        }
        let more = if self.count > self.first.len() as u64 {
            ", ..."
        } else {
            ""
        };
        write!(f, "{} device(s): {}{more}", self.count, self.first.join(", "))
    }
}

/// A step before it is recorded.
#[derive(Debug, Clone)]
pub struct Planned {
    /// What it acts on.
    pub target: String,
    /// Its kind (the verb module knows how to carry it out).
    pub kind: &'static str,
    /// In words.
    pub description: String,
    /// What was decided (JSON), read back when the step is carried out or resumed.
    pub detail: serde_json::Value,
    /// Its blast radius.
    pub cut_off: CutOff,
}

/// A step as reported.
#[derive(Debug, Clone, Serialize)]
pub struct StepReport {
    /// Position in the run, from 1.
    pub seq: u32,
    /// What it acts on.
    pub target: String,
    /// Its kind.
    pub kind: String,
    /// In words.
    pub description: String,
    /// `planned` (dry run), `done`, `done-before` (by the run this one resumed), or `unfinished`
    /// (carried out but left open for a device another client's certificate held back: the
    /// rerun finishes it).
    pub state: &'static str,
    /// Devices that cannot connect with the certificate they hold now once this step is done.
    pub devices_cut_off: CutOff,
}

/// An open run.
pub struct Run {
    /// The run's number in the journal (None for a dry run).
    pub id: Option<i64>,
    /// Whether this run resumes one that was killed or failed (a dry run: would resume it).
    pub resumed: bool,
    /// The open run a dry run would resume (None otherwise).
    resumes: Option<i64>,
    /// The steps, with `result` set on the ones already done.
    pub steps: Vec<JournalStep>,
    /// Whether this process began the unit of work of any step (what may have changed
    /// something, on a remote service even when the unit failed).
    began: AtomicBool,
}

/// Records the planned steps (or finds the open run of the same command and resumes it).
/// A dry run records nothing, nor does a run with no steps; one of a command whose run is open
/// is that run's rerun as it would go ([`Run::would_resume`]).
pub fn begin(
    backend: &mut dyn Backend,
    command: &str,
    planned: &[Planned],
    dry_run: bool,
    now: OffsetDateTime,
) -> Result<Run> {
    let open = backend.open_run(command)?;
    begin_from(backend, command, planned, dry_run, now, open)
}

/// [`begin`] for a caller that has read the open run of `command` already (`open`, from
/// [`Backend::open_run`]) to plan by it: the journal is not asked again.
pub fn begin_from(
    backend: &mut dyn Backend,
    command: &str,
    planned: &[Planned],
    dry_run: bool,
    now: OffsetDateTime,
    open: Option<crate::backend::types::JournalRun>,
) -> Result<Run> {
    let steps: Vec<JournalStep> = planned
        .iter()
        .enumerate()
        .map(|(i, p)| JournalStep {
            seq: i as u32 + 1,
            target: p.target.clone(),
            kind: p.kind.to_string(),
            description: p.description.clone(),
            detail: p.detail.clone(),
            result: None,
        })
        .collect();
    if dry_run {
        return Ok(match open {
            Some(open) => Run::would_resume(open),
            None => Run {
                id: None,
                resumed: false,
                resumes: None,
                steps,
                began: AtomicBool::new(false),
            },
        });
    }
    if let Some(open) = open {
        return Ok(Run {
            id: Some(open.id),
            resumed: true,
            resumes: None,
            steps: open.steps,
            began: AtomicBool::new(false),
        });
    }
    if steps.is_empty() {
        // Nothing to do: nothing to resume either, so nothing is recorded (a cron job that
        // finds nothing due every hour must not grow the store).
        return Ok(Run {
            id: None,
            resumed: false,
            resumes: None,
            steps,
            began: AtomicBool::new(false),
        });
    }
    let id = in_one_unit(backend, |b| b.start_run(command, &steps, now))?;
    Ok(Run {
        id: Some(id),
        resumed: false,
        resumes: None,
        steps,
        began: AtomicBool::new(false),
    })
}

impl Run {
    /// A dry run of a command whose run `open` is open (killed or failed part-way): what its
    /// rerun does, which resumes that run from its journal (the steps done are not done
    /// again). Records nothing.
    pub fn would_resume(open: crate::backend::types::JournalRun) -> Run {
        Run {
            id: None,
            resumed: true,
            resumes: Some(open.id),
            steps: open.steps,
            began: AtomicBool::new(false),
        }
    }

    /// The run's number: its own, or for a dry run the open run it would resume (the `run`
    /// of a verb's report).
    pub fn number(&self) -> Option<i64> {
        self.id.or(self.resumes)
    }

    /// Carries out one step as a unit of work that also marks it done; then the fault switch.
    pub fn step<T>(
        &self,
        backend: &mut dyn Backend,
        seq: u32,
        now: OffsetDateTime,
        f: impl FnOnce(&mut dyn Backend) -> Result<(T, serde_json::Value)>,
    ) -> Result<T> {
        self.step_leaving(backend, seq, now, |b| {
            let (out, result) = f(b)?;
            Ok((out, Some(result)))
        })
    }

    /// [`step`](Self::step) whose work may leave part of it for a rerun: a result of None
    /// commits what was done without marking the step done, so a rerun of the run does it
    /// again (what it did is found done then).
    pub fn step_leaving<T>(
        &self,
        backend: &mut dyn Backend,
        seq: u32,
        now: OffsetDateTime,
        f: impl FnOnce(&mut dyn Backend) -> Result<(T, Option<serde_json::Value>)>,
    ) -> Result<T> {
        let Some(id) = self.id else {
            // A dry run: no transaction, so it never takes the store's write lock.
            return Ok(f(backend)?.0);
        };
        self.began.store(true, Ordering::SeqCst);
        // A remote vault marks what this step creates, so a rerun after a kill before the
        // commit adopts it (the step's run and number stay the same across reruns).
        backend.mark_new_versions(Some(&format!("{id}/{seq}")));
        let out = in_one_unit(backend, |b| {
            let (out, result) = f(b)?;
            fault_point_before_commit();
            if let Some(result) = result {
                b.step_done(id, seq, &result, now)?;
            }
            anyhow::Ok(out)
        });
        backend.mark_new_versions(None);
        let out = out?;
        fault_point();
        Ok(out)
    }

    /// Closes the run.
    pub fn finish(&self, backend: &mut dyn Backend, now: OffsetDateTime) -> Result<()> {
        if let Some(id) = self.id {
            in_one_unit(backend, |b| b.finish_run(id, now))?;
        }
        Ok(())
    }

    /// The error a run stopped on, after closing the run when the error is bad input (exit 2:
    /// a refused credential found while reading what to do) and the run is new and stopped
    /// before the unit of work of any step began: nothing was changed, so nothing is left open
    /// for `check` to warn about or for a rerun to resume; the next run plans afresh. A run
    /// that got further, or failed otherwise (exit 1), stays open for its rerun, and the error
    /// says so last, naming the command that resumes it ([`crate::error::LeftOpen`]): the
    /// cause's own advice (another client's certificate to take back, say) does not finish this
    /// run (trial az14 F3).
    pub fn stopped(
        &self,
        backend: &mut dyn Backend,
        now: OffsetDateTime,
        err: anyhow::Error,
        command: &str,
    ) -> anyhow::Error {
        let Some(id) = self.id else {
            return err;
        };
        if crate::error::classify(&err) == crate::error::Failure::Input
            && !self.resumed
            && !self.began.load(Ordering::SeqCst)
        {
            match in_one_unit(backend, |b| b.finish_run(id, now)) {
                Ok(()) => return err,
                Err(close) => tracing::warn!("run {id} changed nothing but could not be closed: {close:#}"),
            }
        }
        err.context(crate::error::LeftOpen(left_open(id, command)))
    }

    /// Whether step `seq` was done by an earlier attempt of this run.
    pub fn done_before(&self, seq: u32) -> bool {
        // Steps are numbered from 1 in order.
        self.steps
            .get((seq as usize).wrapping_sub(1))
            .is_some_and(|s| s.seq == seq && s.result.is_some())
    }
}

static STEPS_DONE: AtomicU32 = AtomicU32::new(0);

/// Aborts the process after the configured number of committed steps (tests only).
fn fault_point() {
    let done = STEPS_DONE.fetch_add(1, Ordering::SeqCst) + 1;
    if let Some(limit) = std::env::var(FAULT_ENV).ok().and_then(|v| v.parse::<u32>().ok())
        && done == limit
    {
        eprintln!("certroll: {FAULT_ENV}={limit}: aborting after step {done} (fault injection)");
        std::process::abort();
    }
}

static STEPS_WORKED: AtomicU32 = AtomicU32::new(0);

/// Aborts the process once the configured number of steps have done their work, before that
/// step's commit (tests only).
fn fault_point_before_commit() {
    let done = STEPS_WORKED.fetch_add(1, Ordering::SeqCst) + 1;
    if let Some(limit) = std::env::var(FAULT_BEFORE_COMMIT_ENV)
        .ok()
        .and_then(|v| v.parse::<u32>().ok())
        && done == limit
    {
        eprintln!(
            "certroll: {FAULT_BEFORE_COMMIT_ENV}={limit}: aborting before step {done}'s commit (fault injection)"
        );
        std::process::abort();
    }
}

/// The reports of the steps.
pub fn reports(run: &Run, planned: &[Planned], dry_run: bool) -> Vec<StepReport> {
    run.steps
        .iter()
        .map(|s| StepReport {
            seq: s.seq,
            target: s.target.clone(),
            kind: s.kind.clone(),
            description: s.description.clone(),
            state: if run.resumed && s.result.is_some() {
                "done-before"
            } else if dry_run {
                "planned"
            } else {
                "done"
            },
            // A fresh run's steps are the planned ones, in order; a resumed run was not planned
            // again, so its blast radius is not known.
            devices_cut_off: planned
                .get(s.seq as usize - 1)
                .filter(|p| p.target == s.target && p.kind == s.kind)
                .map(|p| p.cut_off.clone())
                .unwrap_or_default(),
        })
        .collect()
}

/// The command that resumes open run `run`: its own, with `--yes` where it is destructive
/// (those ask on a terminal and need it otherwise).
pub(crate) fn resume_command(run: &crate::backend::types::JournalRun) -> String {
    command_resuming(&run.command)
}

/// What a run left open says, in a stopped run's error ([`crate::error::LeftOpen`]) and in the
/// report of a roll that left a device alone: run `id`, of journal command `command`, stays open,
/// and the command that resumes it.
pub(crate) fn left_open(id: i64, command: &str) -> String {
    format!(
        "run {id} stays open: once that is dealt with, `{}` resumes it and finishes it",
        command_resuming(command)
    )
}

/// The command that resumes the open run of journal command `command` (see [`resume_command`]).
pub(crate) fn command_resuming(command: &str) -> String {
    let yes = if command.contains("--breach") || command.starts_with("revoke") {
        " --yes"
    } else {
        ""
    };
    format!("certroll {command}{yes}")
}
