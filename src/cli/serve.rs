//! `serve`: the Azure emulator over the plan's local store.

use super::Global;
use crate::output::Format;
use crate::serve::{ServeOptions, StartInfo};
use clap::Args;
use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

const SERVE_HELP: &str = "\
Serves the plan's local store over HTTPS as Azure Key Vault (certificates, with the
certificate-backed keys and secrets), the Device Provisioning Service (service API, device
registration over mutual TLS, CA certificates on the ARM paths) and IoT Hub (registry, direct
methods, the device-facing endpoint), routed by the Host name: https://{vault}.vault.azure.net,
https://{dps}.azure-devices-provisioning.net, global.azure-devices-provisioning.net,
https://{hub}.azure-devices.net and management.azure.com, the names from the plan's [serve]
section (default `certroll`). Point a client's DNS (curl --resolve,
reqwest resolve, a hosts file) at the listen address, trust the CA written by --ca-out, and
the SDK's production code path runs unchanged. Clients that can only use 127.0.0.1:PORT use
the per-service listeners the start line prints.

Bearer tokens: the plan's [serve.principals.NAME] (token_env, permissions, and arm_role =
\"reader\" or \"contributor\" for management.azure.com; none: no ARM access); without any, one
principal `owner` with every permission and the contributor role whose token is
$CERTROLL_SERVE_TOKEN (or generated and printed in the start line).

[serve.services.SERVICE] (keyvault, dps, dps_device, hub, arm) throttles (429 + Retry-After
above rate_per_second) and injects faults (error_percent of 500/503, drop_percent of dropped
connections, drop_first: the first N dropped, delay_ms).

The start line (-o json: one JSON object on one line) gives vault_url, dps_url, dps_device_url,
id_scope, hub_url, arm_url, ca_file, listen, listeners (service -> https://127.0.0.1:PORT:
keyvault, dps, dps_device, arm, hub for the first hub, hub:NAME for any other), the
connection_strings of each DPS and hub SAS policy, and the generated token, if any. CLI verbs
keep working on the same store while serve runs. SIGINT or SIGTERM stops it after the requests
in flight.

Examples:
  certroll serve --ca-out emulator-ca.pem
  CERTROLL_SERVE_TOKEN=dev certroll serve --listen 127.0.0.1:8443 -o json
  curl --resolve certroll.vault.azure.net:8443:127.0.0.1 --cacert emulator-ca.pem \\
       -H 'Authorization: Bearer dev' \\
       'https://certroll.vault.azure.net:8443/certificates?api-version=7.5'

Exit codes:
  0  stopped by SIGINT or SIGTERM after finishing the requests in flight
  1  failed while serving
  2  bad input (plan, flags, an unset token variable, an address that cannot be bound)";

/// Arguments of `serve`.
#[derive(Debug, Args)]
#[command(after_help = SERVE_HELP)]
pub struct ServeArgs {
    /// The address of the listener that routes by Host name: IP:PORT, the port 0 to 65535 (0:
    /// any free port).
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:8443", value_parser = parse_listen)]
    listen: SocketAddr,
    /// Write the emulator CA's certificate (PEM) to FILE, for clients to trust (`-`: standard
    /// output; the start lines then go to standard error).
    #[arg(long, value_name = "FILE")]
    ca_out: Option<PathBuf>,
}

pub fn exec(g: &Global, args: ServeArgs) -> anyhow::Result<u8> {
    // Every request that writes is dated by this clock, as a verb's writes are.
    g.refuse_time_travel("serve")?;
    let ca_stdout = args.ca_out.as_deref().is_some_and(crate::ops::outfile::is_stdout);
    if ca_stdout && g.output == Format::Json {
        return Err(crate::error::input(
            "--ca-out - writes the CA certificate to standard output, where -o json writes the start line too; \
             name a file with --ca-out or drop -o json",
        ));
    }
    let plan = g.load_plan()?;
    let opts = ServeOptions {
        plan,
        listen: args.listen,
        ca_out: args.ca_out,
        settings: g.backend(),
        clock: Arc::from(g.clock()),
    };
    let format = g.output;
    let quiet = g.quiet;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("certroll-serve")
        // Store work runs on blocking threads behind one store connection, so more threads only
        // wait; tokio's default of 512 grew to 60+ threads under 32 clients, each keeping its
        // own allocator pages (serve's RSS grew with them).
        .max_blocking_threads(crate::serve::MAX_BLOCKING_THREADS)
        .build()?;
    runtime.block_on(crate::serve::run(opts, |info| {
        print_start(info, format, quiet, ca_stdout)
    }))?;
    Ok(0)
}

/// The start line: one JSON object on one line, or a few human lines (on standard error when
/// `--ca-out -` gave standard output to the CA certificate).
fn print_start(info: &StartInfo, format: Format, quiet: bool, to_stderr: bool) -> anyhow::Result<()> {
    let mut out: Box<dyn Write> = if to_stderr {
        Box::new(std::io::stderr().lock())
    } else {
        Box::new(std::io::stdout().lock())
    };
    match format {
        Format::Json => writeln!(out, "{}", serde_json::to_string(info)?)?,
        Format::Human if quiet => {}
        Format::Human => {
            // Every endpoint the JSON start line has, one per line, so a reader of either finds
            // the same things.
            writeln!(
                out,
                "certroll serve listening on {} (routed by Host name)",
                info.listen
            )?;
            writeln!(out, "  vault_url:      {}", info.vault_url)?;
            for (key, value) in [
                ("dps_url", &info.dps_url),
                ("dps_device_url", &info.dps_device_url),
                ("id_scope", &info.id_scope),
                ("hub_url", &info.hub_url),
                ("arm_url", &info.arm_url),
                ("ca_file", &info.ca_file),
            ] {
                if let Some(value) = value {
                    writeln!(out, "  {:<15} {value}", format!("{key}:"))?;
                }
            }
            if !info.listeners.is_empty() {
                writeln!(
                    out,
                    "  listeners (127.0.0.1 only, one service each, no Host routing):"
                )?;
                for (service, url) in &info.listeners {
                    writeln!(out, "    {:<14} {url}", format!("{service}:"))?;
                }
            }
            if !info.connection_strings.is_empty() {
                writeln!(out, "  connection_strings:")?;
                for (service, policies) in &info.connection_strings {
                    for (policy, cs) in policies {
                        writeln!(out, "    {service} {policy}: {cs}")?;
                    }
                }
            }
            if let Some(token) = &info.token {
                writeln!(out, "  bearer token of `owner` (generated): {token}")?;
            }
        }
    }
    out.flush()?;
    Ok(())
}

/// `--listen`: an IP address and a port, said in words when it is not one.
fn parse_listen(text: &str) -> Result<SocketAddr, String> {
    text.trim().parse().map_err(|_| {
        let port = text.rsplit_once(':').map(|(_, p)| p);
        match port.map(|p| super::whole_number(p, 0, 65_535)) {
            Some(Err(e)) if !port.unwrap_or("").is_empty() => format!("the port {e}"),
            _ => "not an IP address and port (IP:PORT, e.g. 127.0.0.1:8443 or [::1]:8443)".to_string(),
        }
    })
}
