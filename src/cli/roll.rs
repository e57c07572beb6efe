//! `roll-secondary` and `roll-primary`.

use super::{Global, parse_target};
use crate::error::input;
use crate::ops::Target;
use crate::ops::roll::{Breach, RollOptions, RollReport, SlotName};
use clap::Args;
use std::io::IsTerminal as _;

/// Arguments of `roll-secondary` / `roll-primary`.
#[derive(Debug, Args)]
#[command(after_help = "\
Expiry rolls: the other slot keeps working (zero downtime); a certificate in it that has
expired is removed. Running the same roll again does nothing.

With --due, only devices whose auto-renew lifetime action has fired are rolled, and the new
certificate goes into the slot that holds the older certificate, whichever verb is used:
a cron job runs `certroll roll-secondary --due` (every device of the plan, or those of the named
devices, groups and CAs) and never needs to know which slot is free.

Breach rolls (--breach): the compromised certificate is deleted at once (the enrollment's
slot, the group's slot, or the enrollment service's CA certificates), revoked, and replaced by
a new one with a new key; the devices are re-provisioned so the hub holds only the new
thumbprints (or, with --remove-hub-identity, their hub identities are deleted first).
Destructive: asks on a terminal, needs --yes otherwise. A rerun does nothing: the journal
remembers the replacement. To declare a replacement compromised as well, give a new --incident.

A run killed part-way is finished by running the same command again.

Examples:
  certroll roll-secondary device:gateway-01 --dry-run
  certroll roll-secondary group:sensors
  certroll roll-secondary ca:root
  certroll roll-secondary --due device:sensor-0001 device:sensor-0002 -o json
  certroll roll-primary --breach device:sensor-0042 --yes
  certroll roll-primary --breach --both group:sensors --incident INC-4711 --yes
  certroll roll-primary --breach ca:root --dry-run")]
pub struct RollArgs {
    /// What to roll: device:ID, enrollment:NAME, group:NAME (its signing intermediate, then
    /// every device of the group under the new CA), or ca:NAME (the CA, every CA below it, the
    /// groups' slots and every device below).
    /// With --due, no target means every device of the plan.
    #[arg(value_parser = parse_target, required_unless_present = "due")]
    targets: Vec<Target>,
    /// Only what an auto-renew lifetime action says is due, into the slot with the older cert.
    #[arg(long, conflicts_with = "breach")]
    due: bool,
    /// The named slot's certificate (or CA) is compromised: remove it at once, revoke it,
    /// replace it.
    #[arg(long)]
    breach: bool,
    /// With --breach: both slots are compromised.
    #[arg(long, requires = "breach")]
    both: bool,
    /// With --breach: delete the devices' hub identities (they provision afresh) instead of
    /// re-provisioning them in place.
    #[arg(long, requires = "breach")]
    remove_hub_identity: bool,
    /// With --breach: a label for the incident (a rerun with the same label does nothing).
    #[arg(long, requires = "breach", value_name = "LABEL")]
    incident: Option<String>,
    /// Print the steps and the devices each cuts off; change nothing.
    #[arg(long)]
    dry_run: bool,
    /// Do not ask for confirmation of a breach roll.
    #[arg(long, short = 'y')]
    yes: bool,
}

pub fn exec(g: &Global, args: RollArgs, slot: SlotName) -> anyhow::Result<u8> {
    let plan = g.load_plan()?;
    let mut opts = RollOptions {
        targets: args.targets,
        slot,
        due: args.due,
        breach: args.breach.then_some(Breach {
            both: args.both,
            remove_hub_identity: args.remove_hub_identity,
            incident: args.incident,
        }),
        dry_run: args.dry_run,
        backend: g.backend(),
    };
    let now = g.clock().now();
    let mut p = g.printer();
    if opts.breach.is_some() && !opts.dry_run && !args.yes {
        // The confirmation shows exactly what will happen.
        if !std::io::stdin().is_terminal() {
            return Err(input(
                "a breach roll is destructive: pass --yes (or run it on a terminal to confirm)",
            ));
        }
        opts.dry_run = true;
        let mut preview = crate::ops::roll::roll(&plan, &opts, now)?;
        crate::ops::roll::azure_words(&plan, &mut preview);
        print_human(&mut p, &preview)?;
        eprint!("Carry out this breach roll? [y/N] ");
        let mut answer = String::new();
        std::io::stdin().read_line(&mut answer)?;
        if !matches!(answer.trim(), "y" | "Y" | "yes") {
            return Err(input("not confirmed; nothing was changed"));
        }
        opts.dry_run = false;
    }
    let remote = g.remote_progress(None);
    let report = crate::ops::roll::roll(&plan, &opts, now);
    drop(remote);
    let mut report = report?;
    // Vault-only certificates' AutoRenew actions fire with the plan's (`vault create`).
    let vault_renewed = if opts.due && opts.targets.is_empty() && opts.breach.is_none() {
        crate::ops::vault::renew::run_due(&plan, &opts.backend, now, opts.dry_run)?
    } else {
        Vec::new()
    };
    if g.output == crate::output::Format::Json {
        #[derive(serde::Serialize)]
        struct WithVault<'a> {
            #[serde(flatten)]
            report: &'a RollReport,
            vault_renewed: Vec<crate::ops::vault::renew::AutoRenewed>,
        }
        let code = vault_exit_code(exit_code(&report, opts.due), &vault_renewed);
        p.json(&WithVault {
            report: &report,
            vault_renewed,
        })?;
        return Ok(code);
    }
    crate::ops::roll::azure_words(&plan, &mut report);
    print_human(&mut p, &report)?;
    for r in &vault_renewed {
        if let Some(why) = &r.refused {
            p.line(format!(
                "vault:{}: due ({}), not renewed: {why}",
                r.name, r.trigger
            ))?;
            continue;
        }
        match &r.version {
            Some(v) => p.line(format!(
                "vault:{}: auto-renewed ({}): version {v}{}",
                r.name,
                r.trigger,
                if r.same_key { ", same key" } else { "" }
            ))?,
            None => p.line(format!("vault:{}: would auto-renew ({})", r.name, r.trigger))?,
        }
    }
    Ok(vault_exit_code(exit_code(&report, opts.due), &vault_renewed))
}

/// 1 also when a due vault certificate was held back (its subject cannot be written as it
/// is): the run renewed the rest, but not everything due.
fn vault_exit_code(code: u8, renewed: &[crate::ops::vault::renew::AutoRenewed]) -> u8 {
    if renewed.iter().any(|r| r.refused.is_some()) {
        code.max(1)
    } else {
        code
    }
}

/// 1 when a device was left alone for another client's certificate in its enrollment
/// (`foreign`), or because another client disabled (`disabled`) or deleted (`deleted`) its
/// individual enrollment, or when `--due` left out a device the plan names but that was never issued, one its CA or
/// group held back, or a renewal that was due but capped by its CA's notAfter (a device or CA
/// in `renew_ca_first`): the run did what was due and could be done, but something due was not
/// done; and when a device is still owed the delivery of its new certificate (the next run
/// delivers it) (README, exit codes).
fn exit_code(report: &RollReport, due: bool) -> u8 {
    if report.devices.iter().any(|d| {
        matches!(
            d.outcome,
            "not-issued" | "held-back" | "foreign" | "disabled" | "deleted"
        )
    }) || (due && !report.renew_ca_first.is_empty())
        || report.deliveries_owed > 0
    {
        1
    } else {
        0
    }
}

/// How many devices are listed one by one before the output summarises.
const DEVICES_LISTED: usize = 20;

fn print_human<W: std::io::Write>(
    p: &mut crate::output::Printer<W>,
    report: &RollReport,
) -> anyhow::Result<()> {
    if let Some(line) = super::resume_line(report.run, report.resumed, report.dry_run) {
        p.line(line)?;
    }
    for s in &report.steps {
        let state = match s.state {
            "planned" => "would",
            "done-before" => "done before",
            "unfinished" => "unfinished",
            _ => "done",
        };
        p.line(format!("{:>3}. [{state}] {}: {}", s.seq, s.target, s.description))?;
        if s.devices_cut_off.count > 0 {
            p.line(format!(
                "     cannot connect with the certificate they hold now: {}",
                s.devices_cut_off
            ))?;
        }
    }
    for gr in &report.groups {
        if gr.outcome == "already-replaced" {
            // A rerun of a finished breach changes nothing, also after the CA was made anew by
            // another roll since: the way to declare the certificate in use now compromised is
            // a new incident (third azure trial, observation 5).
            p.line(format!(
                "{}: an earlier breach roll already replaced the compromised CA certificate of its {} slot; nothing to do. \
                 If the one it holds now is compromised too, run the breach again with a new --incident LABEL",
                gr.target,
                gr.slot.word()
            ))?;
        } else if gr.outcome.starts_with("already") {
            p.line(format!(
                "{}: the {} slot already holds the current certificate of its CA; nothing to do",
                gr.target,
                gr.slot.word()
            ))?;
        }
    }
    if report.devices.len() <= DEVICES_LISTED {
        for d in &report.devices {
            match d.outcome {
                "already-rolled" => p.line(format!(
                    "{}: already holds its newest certificate, under the CA version this roll targets (in the {} slot); nothing to do",
                    d.target,
                    d.slot.word()
                ))?,
                // A resumed step whose device a later run replaced says so in its one step.
                "already-replaced" if !d.steps.is_empty() => p.line(format!("{}: {}", d.target, d.steps[0]))?,
                "already-replaced" => p.line(format!(
                    "{}: an earlier breach roll already replaced its compromised certificate; nothing to do. \
                     If the one it holds now is compromised too, run the breach again with a new --incident LABEL",
                    d.target
                ))?,
                "not-due" => p.line(format!("{}: no auto-renew action is due; nothing to do", d.target))?,
                "not-issued" => p.line(format!(
                    "{}: not issued yet, so not rolled; `certroll issue {}` issues it",
                    d.target, d.target
                ))?,
                // Cut off by another client after its new certificate was written (its group,
                // enrollment or hub identity disabled): the new certificate is stored.
                "disabled" if d.new_thumbprint.is_some() => p.line(format!(
                    "{}: its new certificate went into the {} slot, but it cannot connect: {}",
                    d.target,
                    d.slot.word(),
                    d.steps.first().map(String::as_str).unwrap_or_default()
                ))?,
                "held-back" | "revoked" | "disabled" | "deleted" => p.line(format!(
                    "{}: not rolled: {}",
                    d.target,
                    d.steps.first().map(String::as_str).unwrap_or(d.outcome)
                ))?,
                "capped" => p.line(format!(
                    "{}: its CA's expiry caps a new certificate, which would end no later than the one it holds; not renewed",
                    d.target
                ))?,
                "foreign" => p.line(format!("{}: not rolled: {}", d.target, d.steps.join("; ")))?,
                outcome => {
                    let verb = match outcome {
                        "rolled" => "rolled",
                        "pruned" => "pruned",
                        "replaced" => "replaced",
                        "would-replace" => "would replace",
                        "would-prune" => "would prune",
                        _ => "would roll",
                    };
                    p.line(format!("{}: {verb} into the {} slot", d.target, d.slot.word()))?;
                    for (i, step) in d.steps.iter().enumerate() {
                        p.line(format!("  {}. {step}", i + 1))?;
                    }
                    if let Some(owed) = &d.delivery {
                        p.line(format!("  not delivered: {owed}"))?;
                    }
                }
            }
        }
    } else {
        let mut counts: std::collections::BTreeMap<&str, usize> = Default::default();
        for d in &report.devices {
            *counts.entry(d.outcome).or_default() += 1;
        }
        let summary: Vec<String> = counts.iter().map(|(k, n)| format!("{n} {k}")).collect();
        p.line(format!(
            "{} devices: {}",
            report.devices.len(),
            summary.join(", ")
        ))?;
        // Each device left alone for another client's change (its certificate in the enrollment,
        // the enrollment disabled or deleted), named: each needs an operator.
        for d in report
            .devices
            .iter()
            .filter(|d| matches!(d.outcome, "foreign" | "disabled" | "deleted"))
        {
            // Written before another client cut it off: the way back is its first step.
            if d.new_thumbprint.is_some() {
                let why = d.steps.first().map(String::as_str).unwrap_or_default();
                p.line(format!(
                    "{}: its new certificate was written, but it cannot connect: {why}",
                    d.target
                ))?;
            } else {
                p.line(format!("{}: not rolled: {}", d.target, d.steps.join("; ")))?;
            }
        }
        for d in report.devices.iter().filter(|d| d.outcome == "not-issued") {
            p.line(format!(
                "{}: not issued yet, so not rolled; `certroll issue {}` issues it",
                d.target, d.target
            ))?;
        }
        // Held back devices share their reasons (a CA, a group): each reason once, with its count.
        let mut reasons: Vec<(&str, Vec<&str>)> = Vec::new();
        for d in report.devices.iter().filter(|d| d.outcome == "held-back") {
            let why = d.steps.first().map(String::as_str).unwrap_or_default();
            match reasons.iter_mut().find(|(w, _)| *w == why) {
                Some((_, ids)) => ids.push(&d.target),
                None => reasons.push((why, vec![&d.target])),
            }
        }
        for (why, ids) in reasons {
            p.line(format!(
                "{} device(s) ({} .. {}) not rolled: {why}",
                ids.len(),
                ids[0],
                ids[ids.len() - 1]
            ))?;
        }
    }
    if let Some(left) = &report.left_open {
        p.line(&left.message)?;
    }
    for run in &report.finished_open_runs {
        p.line(format!(
            "run {run} is finished too: all it had left to do was the device(s) this breach replaced"
        ))?;
    }
    if report.deliveries_owed > 0 {
        let failed: Vec<&str> = report
            .devices
            .iter()
            .filter(|d| d.delivery.is_some())
            .map(|d| d.target.as_str())
            .take(5)
            .collect();
        let first = if failed.is_empty() {
            String::new()
        } else {
            format!(" ({} of this run's: {})", failed.len(), failed.join(", "))
        };
        p.line(format!(
            "{} device(s) still owed their new certificate{first}: the delivery failed; the next \
             `certroll issue` or roll delivers it (`certroll check` lists them)",
            report.deliveries_owed
        ))?;
    }
    for held in &report.held_back_deliveries {
        p.line(format!("{}: delivery held back: {}", held.target, held.reason))?;
    }
    // Labelled by what the run wanted to renew (the CAs it names, else the capping CA whose
    // devices wait); the message names the CA to renew first.
    for c in &report.renew_ca_first {
        let label = if c.cas.is_empty() {
            c.target.clone()
        } else {
            c.cas.join(", ")
        };
        p.line(format!("{label}: {}", c.message))?;
    }
    for w in &report.warnings {
        p.line(format!("warning: {w}"))?;
    }
    if report.dry_run {
        p.line(format!(
            "Dry run: nothing was changed. {} device(s) would be unable to connect until they receive their new certificate.",
            report.devices_cut_off.count
        ))?;
    }
    Ok(())
}
