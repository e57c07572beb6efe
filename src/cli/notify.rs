//! `notify`, and the notify step that runs after every mutating verb.

use super::Global;
use crate::notify::{Channels, NotifyReport, RemoteRead};
use crate::output::Format;
use clap::Args;

/// Arguments of `notify`.
#[derive(Debug, Args)]
#[command(after_help = "\
Queues every email-contacts lifetime action that has fired and every renewal that happened
(each exactly once ever), then mails each contact one summary of what is owed to them and runs
the [hooks] command with the events as JSON on stdin. What cannot be delivered stays owed and is
sent by the next run; the run then exits 1. issue, roll-*, revoke and reprovision do the same
when they finish.

Examples:
  certroll notify                  # cron, e.g. daily
  certroll notify --dry-run -o json")]
pub struct NotifyArgs {
    /// List what would be queued and sent; record and send nothing.
    #[arg(long)]
    dry_run: bool,
    /// On backend kind azure: read every certificate's policy from Key Vault again, not only
    /// those whose newest version changed (picks up a policy changed outside certroll).
    #[arg(long)]
    refresh: bool,
}

pub fn exec(g: &Global, args: NotifyArgs) -> anyhow::Result<u8> {
    if !args.dry_run {
        // A notice recorded as sent at a far `--now` is never sent when that time comes.
        g.refuse_time_travel("notify")?;
    }
    let plan = g.load_plan()?;
    let channels = Channels::from_env(&plan)?;
    let report = crate::notify::notify(
        &plan,
        &channels,
        &g.backend(),
        g.clock().now(),
        args.dry_run,
        if args.refresh {
            RemoteRead::Everything
        } else {
            RemoteRead::Listing
        },
    )?;
    let mut p = g.printer();
    if g.output == Format::Json {
        p.json(&report)?;
    } else {
        print_human(&mut p, &report, true)?;
    }
    report_failures(&report);
    Ok(if report.failed() { 1 } else { 0 })
}

/// Failed deliveries on stderr, whatever the output format.
fn report_failures(report: &NotifyReport) {
    for d in report.deliveries.iter().filter(|d| d.outcome == "failed") {
        eprintln!(
            "error: {} to {} not delivered: {}",
            d.channel,
            d.to,
            d.error.as_deref().unwrap_or("unknown error")
        );
    }
    if report.failed() {
        eprintln!("The undelivered notices stay owed; the next certroll run sends them.");
    }
}

/// Notices listed by a human dry run before "and N more".
const SHOWN: usize = 50;

fn print_human(
    p: &mut crate::output::Printer<crate::output::Stdout>,
    r: &NotifyReport,
    verbose: bool,
) -> std::io::Result<()> {
    if verbose {
        let verb = if r.dry_run { "Would queue" } else { "Queued" };
        p.line(format!("{verb} {} new notice(s).", r.queued))?;
    }
    if verbose && r.dry_run {
        for e in r.events.iter().take(SHOWN) {
            let what = e.target.as_deref().unwrap_or(&e.certificate);
            let detail = match &e.trigger {
                Some(t) => format!("email-contacts ({t}) fired {}", crate::clock::rfc3339(e.at)),
                None => format!("renewed {}", crate::clock::rfc3339(e.at)),
            };
            p.line(format!(
                "  {what:<30} {detail}; expires {}",
                crate::clock::rfc3339(e.not_after)
            ))?;
        }
        if r.events.len() > SHOWN {
            p.line(format!(
                "  ... and {} more (-o json lists all)",
                r.events.len() - SHOWN
            ))?;
        }
    }
    for d in &r.deliveries {
        let what = match d.outcome {
            "sent" => "sent",
            "would-send" => "would send",
            _ => "FAILED",
        };
        p.line(format!(
            "{} to {}: {what} ({} notice(s))",
            d.channel, d.to, d.events
        ))?;
    }
    if !r.mail_configured && !r.hook_configured {
        if verbose {
            p.line(
                "No [mail] or [hooks] is configured: notices are recorded, none is sent \
                 (configuring one later does not send these).",
            )?;
        }
    } else if verbose && r.deliveries.is_empty() && r.owed_mail == 0 {
        p.line("Nothing to send.")?;
    }
    if r.dry_run && verbose {
        p.line("Dry run: nothing was recorded or sent.")?;
    }
    Ok(())
}

/// The notify step after a mutating verb, run once after the verb succeeded. Mail settings that
/// do not resolve (a password variable that is not set, a bad `CERTROLL_SMTP_*`) never stop the
/// verb: the work is done, the events are queued and stay owed to the contacts, and the run says
/// why and exits 1, like any other failed delivery.
pub struct AfterVerb {
    plan: crate::plan::Plan,
    channels: Channels,
    mail_error: Option<String>,
}

impl AfterVerb {
    /// Loads the plan the verb will use. A plan that does not load is left to the verb, which
    /// reports it.
    pub fn prepare(g: &Global) -> Option<AfterVerb> {
        let plan = g.load_plan().ok()?;
        let (channels, mail_error) = match Channels::from_env(&plan) {
            Ok(channels) => (channels, None),
            Err(e) => {
                let channels = Channels {
                    mail: None,
                    ..Channels::without_mail(&plan)
                };
                (channels, Some(format!("{e:#}")))
            }
        };
        Some(AfterVerb {
            plan,
            channels,
            mail_error,
        })
    }

    /// Scans, queues and delivers; returns 1 if a delivery failed. Human output only: a JSON
    /// run keeps its one document, and failures go to stderr. On `kind = "azure"` it reads from
    /// Key Vault only the certificates certroll wrote to since the last scan, and the whole
    /// listing at most once per the plan's `notify_listing_hours` ([`RemoteRead::Touched`]).
    pub fn run(self, g: &Global) -> anyhow::Result<u8> {
        let report = crate::notify::notify(
            &self.plan,
            &self.channels,
            &g.backend(),
            g.clock().now(),
            false,
            RemoteRead::Touched,
        )?;
        if g.output == Format::Human {
            print_human(&mut g.printer(), &report, false)?;
        }
        report_failures(&report);
        if let Some(e) = &self.mail_error {
            eprintln!("error: mail not sent: {e}");
            if report.owed_mail > 0 {
                eprintln!(
                    "{} notice(s) stay owed to the contacts; the next certroll run sends them.",
                    report.owed_mail
                );
            }
            return Ok(1);
        }
        Ok(if report.failed() { 1 } else { 0 })
    }
}
