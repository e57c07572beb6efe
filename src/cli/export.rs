//! `export`.

use super::{Global, parse_target};
use crate::error::input;
use crate::ops::{ExportFormat, ExportOptions, Target};
use clap::Args;
use std::path::PathBuf;

/// Arguments of `export`.
#[derive(Debug, Args)]
#[command(
    after_help = "Examples:\n  certroll export ca:root --format pem --out root.pem\n  certroll export ca:factory --crl --out factory.crl.pem\n  certroll export device:sensor-0001 --format pem --with-key --out sensor.pem\n  PFX_PASSWORD=... certroll export device:gateway-01 --format pfx --password-env PFX_PASSWORD --out gw.pfx"
)]
pub struct ExportArgs {
    /// What to export: ca:NAME, device:ID or enrollment:NAME.
    #[arg(value_parser = parse_target)]
    target: Target,
    /// pem: certificate and chain (up to, not including, the root); pfx: key and full chain.
    /// Default: the policy's content_type (pem unless it is pfx); --with-key, or a key that may
    /// not leave the vault, means pem.
    #[arg(long, value_enum)]
    format: Option<ExportFormat>,
    /// The file to write (created 0600 when it holds a key).
    #[arg(long)]
    out: PathBuf,
    /// Add the private key to a PEM export (refused for non-exportable keys).
    #[arg(long)]
    with_key: bool,
    /// Write the CRL of a CA (ca:NAME) instead of its certificate.
    #[arg(long)]
    crl: bool,
    /// The environment variable holding the PFX password.
    #[arg(long, value_name = "VAR")]
    password_env: Option<String>,
}

pub fn exec(g: &Global, args: ExportArgs) -> anyhow::Result<u8> {
    // A CRL is dated `--now` and spends a CRL number.
    g.refuse_time_travel("export")?;
    let plan = g.load_plan()?;
    let password = match &args.password_env {
        Some(var) => {
            Some(zeroize::Zeroizing::new(std::env::var(var).map_err(|_| {
                input(format!("--password-env {var}: the variable is not set"))
            })?))
        }
        None => None,
    };
    if args.format == Some(ExportFormat::Pfx) && password.is_none() {
        return Err(input("a pfx export needs a password: --password-env VAR"));
    }
    let mut p = g.out_printer(&args.out)?;
    let opts = ExportOptions {
        target: args.target,
        format: args.format,
        out: args.out,
        with_key: args.with_key,
        crl: args.crl,
        password,
        backend: g.backend(),
    };
    let report = crate::ops::export(&plan, &opts, g.clock().now())?;
    if g.output == crate::output::Format::Json {
        p.json(&report)?;
    } else if report.format == "crl" {
        p.line(format!(
            "Wrote the {} of {} to {}",
            report.certificate,
            report.target,
            report.out.display()
        ))?;
    } else {
        p.line(format!(
            "Wrote {} ({}, version {}, {} certificate(s){}) to {}",
            report.target,
            report.format,
            report.version,
            report.certificates,
            if report.includes_key {
                ", with private key"
            } else {
                ""
            },
            report.out.display()
        ))?;
        if let Some(note) = &report.note {
            p.line(format!("note: {note}"))?;
        }
    }
    Ok(0)
}
