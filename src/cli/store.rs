//! `store`: administration of the local store itself.

use super::Global;
use clap::{Args, Subcommand};

/// Arguments of `store`.
#[derive(Debug, Args)]
pub struct StoreArgs {
    #[command(subcommand)]
    command: StoreCommand,
}

#[derive(Debug, Subcommand)]
enum StoreCommand {
    /// Re-seal every private key in the store under a new store key, then replace the key file.
    ///
    /// One transaction re-seals the keys; the new key waits in `<key file>.new` until then, so a
    /// kill at any point leaves the old key or the new one opening the store. Vault backups that
    /// hold non-exportable keys sealed under the old key restore only into a store with that key.
    #[command(
        after_help = "Examples:\n  certroll store rekey\n  certroll --key-file /secrets/state.key store rekey -o json"
    )]
    Rekey,
}

pub fn exec(g: &Global, args: StoreArgs) -> anyhow::Result<u8> {
    match args.command {
        StoreCommand::Rekey => {
            g.refuse_time_travel("store rekey")?;
            let plan = g.load_plan()?;
            let report = crate::ops::rekey::rekey(&plan, &g.backend())?;
            let mut p = g.printer();
            if p.format() == crate::output::Format::Json {
                p.json(&report)?;
            } else {
                p.line(format!(
                    "Re-sealed {} version key(s) and {} request key(s) of {}; the new key is in {}",
                    report.resealed.version_keys,
                    report.resealed.pending_keys,
                    report.store.display(),
                    report.key_file.display()
                ))?;
            }
            Ok(0)
        }
    }
}
