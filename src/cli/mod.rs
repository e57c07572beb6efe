//! The command line: clap definitions, one thin `exec` per verb, and the mapping of errors to
//! exit codes. Nothing here decides PKI or state; it parses, calls `ops`, and prints.

mod check;
mod completions;
mod export;
mod issue;
mod notify;
mod plan;
mod reprovision;
mod revoke;
mod roll;
mod serve;
mod status;
mod store;
mod vault;

use crate::clock::{Clock, FixedClock, SystemClock};
use crate::ops::{BackendSettings, Target};
use crate::output::{Format, Printer};
use clap::{Args, Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;

/// The exit-code contract, as `--help` and the man page print it; README's table says the same
/// (tests/it/docs.rs compares them).
pub const EXIT_CODES: &str = "\
Exit codes:
  0  done, or nothing to do
  1  failed part-way (running it again resumes), a device refused, a device left alone because a certificate of another client holds its individual enrollment (outcome `foreign`; `roll-primary --breach enrollment:ID` takes it back), a new certificate still owed to its device (on azure: its delivery failed; the next `issue` or roll delivers it; not with `delivery = \"none\"`), or `--due` found a device not issued yet, held back by its CA or group, or capped by the notAfter of its CA
  2  bad input (plan, flags, files, store key, a target the plan does not declare, a refused export); nothing was changed
  3  (check only) the plan or the state cannot be read";

/// certroll rotates X.509 certificates for IoT fleets and certificate vaults.
#[derive(Debug, Parser)]
#[command(name = "certroll", version, about, after_help = EXIT_CODES)]
pub struct Cli {
    #[command(flatten)]
    global: Global,
    #[command(subcommand)]
    command: Command,
    /// Whether the verb was given `--dry-run` (read from the parsed arguments by [`Cli::parse_args`]):
    /// a dry run is not followed by the notify step.
    #[arg(skip)]
    dry_run: bool,
}

impl Cli {
    /// Parses the process's arguments.
    pub fn parse_args() -> Result<Cli, clap::Error> {
        use clap::FromArgMatches as _;
        let matches = command().try_get_matches()?;
        let mut cli = Cli::from_arg_matches(&matches)?;
        cli.dry_run = matches
            .subcommand()
            .and_then(|(_, sub)| sub.try_get_one::<bool>("dry_run").ok().flatten().copied())
            .unwrap_or(false);
        Ok(cli)
    }
}

/// Options every verb takes.
#[derive(Debug, Args)]
pub struct Global {
    /// The plan file.
    #[arg(long, global = true, env = "CERTROLL_PLAN", default_value = "certroll.toml")]
    pub plan: PathBuf,
    /// Output format.
    #[arg(short, long, global = true, value_enum, default_value_t = Format::Human)]
    pub output: Format,
    /// Print only errors (and no progress bar).
    #[arg(short, long, global = true)]
    pub quiet: bool,
    /// More log output on stderr (-v info, -vv debug).
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    /// Decide everything as if it were this RFC 3339 time (for tests and rehearsals).
    #[arg(long, global = true, env = "CERTROLL_NOW", hide_short_help = true, value_parser = parse_now)]
    pub now: Option<time::OffsetDateTime>,
    /// Let a verb that writes run with --now more than 5 minutes ahead of or a day behind the real
    /// clock (a rehearsal on a copy of the store): certificates made then are not valid now.
    #[arg(
        long,
        global = true,
        env = "CERTROLL_ALLOW_TIME_TRAVEL",
        hide_short_help = true,
        value_parser = clap::builder::BoolishValueParser::new()
    )]
    pub allow_time_travel: bool,
    /// The store key file (default: the store path with `.key` appended).
    #[arg(long, global = true, env = "CERTROLL_KEY_FILE", hide_short_help = true)]
    pub key_file: Option<PathBuf>,
    /// Seconds to wait for another certroll writing to the same store (0 to 86400).
    #[arg(long, global = true, default_value_t = 30, hide_short_help = true, value_parser = parse_lock_timeout)]
    pub lock_timeout: u64,
}

/// A whole number from `low` to `high`, the flag's real range, said as such when it is not one.
pub(crate) fn whole_number(text: &str, low: u32, high: u32) -> Result<u32, String> {
    let range = format!("{low} to {high}");
    let trimmed = text.trim();
    if trimmed.is_empty()
        || !trimmed
            .trim_start_matches(['-', '+'])
            .bytes()
            .all(|b| b.is_ascii_digit())
    {
        return Err(format!("not a whole number ({range})"));
    }
    match trimmed.parse::<i128>() {
        Ok(n) if (i128::from(low)..=i128::from(high)).contains(&n) => Ok(n as u32),
        _ => Err(format!("out of range ({range})")),
    }
}

/// `--lock-timeout`: seconds, up to a day.
/// The line a verb's human report opens with when its run resumes one killed or failed
/// part-way (`resumed`, run number `run`), or, in a dry run, would resume it; None otherwise.
pub(crate) fn resume_line(run: Option<i64>, resumed: bool, dry_run: bool) -> Option<String> {
    let run = run.unwrap_or_default();
    match (resumed, dry_run) {
        (false, _) => None,
        (true, true) => Some(format!(
            "Would resume run {run} (killed or failed part-way) from its journal, as a rerun does: the steps it \
             did are not done again."
        )),
        (true, false) => Some(format!("Resuming run {run} (killed or failed part-way).")),
    }
}

fn parse_lock_timeout(text: &str) -> Result<u64, String> {
    whole_number(text, 0, 86_400).map(u64::from)
}

fn parse_now(text: &str) -> Result<time::OffsetDateTime, String> {
    crate::clock::parse_rfc3339(text)
}

fn parse_target(text: &str) -> Result<Target, String> {
    Target::parse(text)
}

/// How far `--now` may be behind the real clock for a verb that writes, without
/// `--allow-time-travel`: a day covers time zones and a clock set by hand.
pub const TIME_TRAVEL_LIMIT: time::Duration = time::Duration::hours(24);

/// How far `--now` may be ahead of the real clock for a verb that writes, without
/// `--allow-time-travel`: the plan's default notBefore backdating (5 minutes). Further ahead,
/// a new certificate's notBefore (`--now` less the skew) lies in the real future, and devices
/// and the enrollment service refuse it as not yet valid until then.
pub const TIME_AHEAD_LIMIT: time::Duration = time::Duration::minutes(5);

impl Global {
    /// Refuses (exit 2) a verb that writes when `--now` (or `CERTROLL_NOW`) is more than
    /// [`TIME_AHEAD_LIMIT`] ahead of or [`TIME_TRAVEL_LIMIT`] behind the real clock and `--allow-time-travel` is not given: what it
    /// made would be dated then (a certificate from the future is not yet valid, a journal run
    /// from the past looks stale).
    pub(crate) fn refuse_time_travel(&self, verb: &str) -> anyhow::Result<()> {
        let Some(at) = self.now else {
            return Ok(());
        };
        let real = time::OffsetDateTime::now_utc();
        let off = at - real;
        let limit = if off.is_positive() {
            TIME_AHEAD_LIMIT
        } else {
            TIME_TRAVEL_LIMIT
        };
        if self.allow_time_travel || off.abs() <= limit {
            return Ok(());
        }
        let span = if off.abs().whole_days() >= 2 {
            format!("{} days", off.abs().whole_days())
        } else if off.abs().whole_hours() >= 2 {
            format!("{} hours", off.abs().whole_hours())
        } else {
            format!("{} minutes", off.abs().whole_minutes())
        };
        Err(crate::error::input(format!(
            "--now {} is {span} {} the real clock ({}); `{verb}` would write certificates and records dated then \
             (certificates from the future are not yet valid). Rehearse with --dry-run, or pass \
             --allow-time-travel (CERTROLL_ALLOW_TIME_TRAVEL=1), best on a copy of the store",
            crate::clock::rfc3339(at),
            if off.is_positive() { "ahead of" } else { "behind" },
            crate::clock::rfc3339(real)
        )))
    }

    fn clock(&self) -> Box<dyn Clock> {
        match self.now {
            Some(t) => Box::new(FixedClock(t)),
            None => Box::new(SystemClock),
        }
    }

    fn backend(&self) -> BackendSettings {
        BackendSettings {
            key_file: self.key_file.clone(),
            lock_timeout: Some(std::time::Duration::from_secs(self.lock_timeout)),
        }
    }

    fn printer(&self) -> Printer<crate::output::Stdout> {
        Printer::new(crate::output::stdout(), self.output, self.quiet)
    }

    /// The printer of a verb that writes `out`: with `--out -` the file is standard output, so
    /// the report is not printed beside it (exit 2 for `-o json`, which would be mixed in).
    /// Called before the verb does anything.
    fn out_printer(&self, out: &std::path::Path) -> anyhow::Result<Printer<crate::output::Stdout>> {
        if crate::ops::outfile::is_stdout(out) {
            if self.output == crate::output::Format::Json {
                return Err(crate::error::input(
                    "--out - writes the file to standard output, where -o json would write its report too; \
                     name a file with --out or drop -o json",
                ));
            }
            return Ok(Printer::new(crate::output::stdout(), self.output, true));
        }
        Ok(self.printer())
    }

    /// Whether a progress bar may be drawn: a person at a terminal, human output, no `-q`.
    fn shows_progress(&self) -> bool {
        !self.quiet
            && self.output == crate::output::Format::Human
            && std::io::IsTerminal::is_terminal(&std::io::stderr())
    }

    /// A bar of the remote work (Key Vault imports, deliveries, DPS and IoT Hub pages) on
    /// stderr while the returned guard lives, below the bars of `multi`; `None` when no bar is
    /// drawn. See [`crate::progress`].
    fn remote_progress(
        &self,
        multi: Option<&indicatif::MultiProgress>,
    ) -> Option<crate::progress::Installed> {
        if !self.shows_progress() {
            return None;
        }
        let place = match multi {
            Some(multi) => crate::progress::Place::Multi(multi.clone()),
            None => crate::progress::Place::Target(indicatif::ProgressDrawTarget::stderr()),
        };
        let sink = crate::progress::BarSink::new(place);
        Some(crate::progress::install(std::sync::Arc::new(sink)))
    }

    fn load_plan(&self) -> anyhow::Result<crate::plan::Plan> {
        Ok(crate::plan::load(&self.plan)?)
    }
}

/// The verbs.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Write a commented starter plan.
    Init(plan::InitArgs),
    /// Check a plan; touches nothing.
    Validate(plan::ValidateArgs),
    /// Create whatever the plan declares and the state lacks.
    Issue(issue::IssueArgs),
    /// Expiry roll: a new certificate into the secondary slot; the primary keeps working.
    RollSecondary(roll::RollArgs),
    /// Expiry roll: a new certificate into the primary slot; the secondary keeps working.
    RollPrimary(roll::RollArgs),
    /// Disallow devices, enrollments or groups; put revoked serials on their CA's CRL.
    Revoke(revoke::RevokeArgs),
    /// Make devices register again so the hub picks up the certificates they hold.
    Reprovision(reprovision::ReprovisionArgs),
    /// Show CAs, enrollments, slots, devices and hub identities.
    Status(status::StatusArgs),
    /// Write a certificate with its chain (and key, if exportable) as PEM or PFX.
    Export(export::ExportArgs),
    /// The vault: certificates, versions, tags, soft delete, backup/restore, import, CSR/merge, contacts, issuers.
    Vault(vault::VaultArgs),
    /// The local store itself: `rekey` re-seals every private key under a new store key.
    Store(store::StoreArgs),
    /// For cron and monitoring: what is expired, what has an action due, what is next (exit 0/1/2/3).
    Check(check::CheckArgs),
    /// Mail the contacts and run the hook about fired email-contacts actions and renewals.
    Notify(notify::NotifyArgs),
    /// Serve the plan's local store as Azure Key Vault, DPS and IoT Hub over HTTPS (an emulator for
    /// SDKs, device clients and rehearsals).
    Serve(serve::ServeArgs),
    /// Print shell completions.
    Completions(completions::CompletionsArgs),
    /// Print the man page (roff), or write every page (one per verb too) into a folder.
    Man(completions::ManArgs),
}

/// Parses the command line, runs the verb, and returns the exit code.
///
/// With `-o json`, a failure also prints a JSON error document on stdout (see
/// [`crate::output::print_error_document`]); the text on stderr stays as it is.
pub fn main() -> ExitCode {
    let cli = match Cli::parse_args() {
        Ok(cli) => cli,
        Err(e) => {
            let checking = std::env::args().any(|a| a == "check");
            // Help and version text that cannot be written (a full disk) is a failure like any
            // other verb's output; a closed pipe (`| head`) is not.
            let printed = e.print().and_then(|()| {
                use std::io::Write;
                std::io::stdout().flush()
            });
            if let Err(err) = printed
                && err.kind() != std::io::ErrorKind::BrokenPipe
            {
                eprintln!("error: cannot write the output: {err}");
                return ExitCode::from(if checking { CHECK_UNKNOWN } else { 1 });
            }
            // clap's usage errors are input errors; --help and --version are not errors. For
            // `check`, monitoring reads anything it cannot tell as UNKNOWN (3), not CRITICAL (2).
            let code = match (e.use_stderr(), checking) {
                (false, _) => 0,
                (true, true) => 3,
                (true, false) => 2,
            };
            if code != 0 && json_requested() {
                let _ = crate::output::print_error_document(&crate::output::ErrorBody {
                    message: usage_message(&e),
                    kind: "usage",
                    exit_code: code,
                });
            }
            return ExitCode::from(code);
        }
    };
    init_tracing(
        cli.global.verbose,
        cli.global.quiet,
        matches!(cli.command, Command::Serve(_)),
    );
    let json = cli.global.output == Format::Json;
    // `check`'s codes are monitoring states: a failure of its own (its report cannot be written,
    // say) is UNKNOWN, never WARNING (1) or CRITICAL (2).
    let checking = matches!(cli.command, Command::Check(_));
    match run(cli) {
        Ok(code) => ExitCode::from(code),
        Err(err) => {
            if is_broken_pipe(&err) {
                return ExitCode::SUCCESS;
            }
            eprintln!("error: {}", crate::error::message(&err));
            let mut body = crate::output::ErrorBody::from_error(&err);
            if checking {
                body.exit_code = CHECK_UNKNOWN;
            }
            if json {
                let _ = crate::output::print_error_document(&body);
            }
            ExitCode::from(body.exit_code)
        }
    }
}

/// `check`'s exit code when it cannot tell (Nagios' UNKNOWN): also its code for any failure.
const CHECK_UNKNOWN: u8 = 3;

/// Whether a command line that clap refused asked for `-o json`. clap stops at the first bad
/// argument, so an `-o json` after it never reaches its matches; the raw arguments are read
/// instead (see [`output_in_args`]).
fn json_requested() -> bool {
    let args: Vec<String> = std::env::args_os()
        .skip(1)
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    output_in_args(&args) == Some("json")
}

/// The value of the last `-o`/`--output` on a command line, in any spelling clap accepts:
/// `-o json`, `-ojson`, `-o=json`, `--output json`, `--output=json`, and `-o` at the end of a
/// cluster of the flag-only short options (`-qo json`). Nothing after `--` counts.
fn output_in_args(args: &[String]) -> Option<&str> {
    let mut found = None;
    let mut iter = args.iter();
    while let Some(arg) = iter.next() {
        if arg == "--" {
            break;
        }
        let attached = if let Some(long) = arg.strip_prefix("--") {
            match long.strip_prefix("output") {
                Some("") => None,
                Some(rest) => match rest.strip_prefix('=') {
                    Some(value) => Some(value),
                    None => continue,
                },
                None => continue,
            }
        } else if let Some(cluster) = arg.strip_prefix('-') {
            // Only the flags that take no value may come before `o` in one cluster.
            let flags = cluster.trim_start_matches(['q', 'v', 'y']);
            match flags.strip_prefix('o') {
                Some("") => None,
                Some(rest) => Some(rest.strip_prefix('=').unwrap_or(rest)),
                None => continue,
            }
        } else {
            continue;
        };
        found = match attached {
            Some(value) => Some(value),
            None => iter.next().map(String::as_str),
        };
    }
    found
}

/// clap's message without its `error: ` prefix, like the messages of other errors.
fn usage_message(e: &clap::Error) -> String {
    let text = e.render().to_string();
    let text = text.trim();
    text.strip_prefix("error: ").unwrap_or(text).to_string()
}

fn is_broken_pipe(err: &anyhow::Error) -> bool {
    err.chain().any(|c| {
        c.downcast_ref::<std::io::Error>()
            .is_some_and(|e| e.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

fn init_tracing(verbose: u8, quiet: bool, serving: bool) {
    let level = match verbose {
        0 => "warn",
        1 => "info",
        _ => "debug",
    };
    let mut directives = format!("certroll={level}");
    // A server's access log is on by default (one line per request); -q turns it off.
    if serving && verbose == 0 && !quiet {
        directives.push_str(",certroll::serve::access=info");
    }
    let filter = tracing_subscriber::EnvFilter::try_from_env("CERTROLL_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(directives));
    // Colour only for a person at a terminal: escape codes in a redirected log are noise.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi)
        .with_writer(std::io::stderr)
        // Its own report of a failed write is an `eprintln!`, which panics on a closed stderr.
        .log_internal_errors(false)
        .try_init();
}

/// Runs a parsed command; returns the exit code on success.
pub fn run(cli: Cli) -> anyhow::Result<u8> {
    let g = &cli.global;
    // Every verb that changes state is followed, once it has succeeded, by the notify step.
    let verb = match cli.command {
        Command::Issue(_) => Some("issue"),
        Command::RollSecondary(_) => Some("roll-secondary"),
        Command::RollPrimary(_) => Some("roll-primary"),
        Command::Reprovision(_) => Some("reprovision"),
        Command::Revoke(_) => Some("revoke"),
        _ => None,
    };
    let mutating = verb.is_some();
    if let Some(verb) = verb
        && !cli.dry_run
    {
        g.refuse_time_travel(verb)?;
    }
    let after = if mutating && !cli.dry_run {
        notify::AfterVerb::prepare(g)
    } else {
        None
    };
    let code = match cli.command {
        Command::Init(args) => plan::init(g, args),
        Command::Validate(args) => plan::validate(g, args),
        Command::Issue(args) => issue::exec(g, args),
        Command::RollSecondary(args) => roll::exec(g, args, crate::ops::roll::SlotName::Secondary),
        Command::RollPrimary(args) => roll::exec(g, args, crate::ops::roll::SlotName::Primary),
        Command::Reprovision(args) => reprovision::exec(g, args),
        Command::Revoke(args) => revoke::exec(g, args),
        Command::Status(args) => status::exec(g, args),
        Command::Export(args) => export::exec(g, args),
        Command::Check(args) => check::exec(g, args),
        Command::Notify(args) => notify::exec(g, args),
        Command::Vault(args) => vault::exec(g, args),
        Command::Store(args) => store::exec(g, args),
        Command::Serve(args) => serve::exec(g, args),
        Command::Completions(args) => completions::exec(args),
        Command::Man(args) => completions::man(args),
    }?;
    match after {
        Some(after) => Ok(code.max(after.run(g)?)),
        None => Ok(code),
    }
}

/// The clap command, for completions and the man page.
pub fn command() -> clap::Command {
    <Cli as clap::CommandFactory>::command()
}

#[cfg(test)]
mod tests {
    use super::output_in_args;

    fn output(line: &str) -> Option<String> {
        let args: Vec<String> = line.split_whitespace().map(String::from).collect();
        output_in_args(&args).map(String::from)
    }

    #[test]
    fn every_spelling_of_the_output_option_is_found_even_after_a_bad_argument() {
        for line in [
            "status -o json",
            "status --bogus -o json",
            "-ojson status",
            "-o=json status",
            "--output json status",
            "--output=json status",
            "status -qvo json",
            "status -qojson",
            "-o human status -o json",
        ] {
            assert_eq!(output(line).as_deref(), Some("json"), "{line}");
        }
    }

    #[test]
    fn look_alikes_and_arguments_after_the_separator_are_not_the_output_option() {
        for line in [
            "status",
            "status --outputs json",
            "status -x json",
            "status -- -o json",
            "status -o",
            "status -pojson",
        ] {
            assert_ne!(output(line).as_deref(), Some("json"), "{line}");
        }
        assert_eq!(output("status -o json -o human").as_deref(), Some("human"));
    }
}
