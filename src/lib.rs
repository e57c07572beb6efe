//! certroll rotates X.509 certificates for IoT fleets and certificate vaults.
//!
//! The crate is layered; each layer calls only the layers below it:
//!
//! - [`cli`]: clap definitions and one thin `exec` per verb; maps errors to exit codes.
//! - [`ops`]: one module per verb (`ops::issue`, `ops::status`, `ops::export`, ...). Ops take a
//!   validated plan, a backend and the time, and return report structs; they never print.
//! - [`output`]: renders reports as human text or one JSON document.
//! - [`plan`]: the TOML plan: parsing, validation with file:line:column errors.
//! - [`backend`]: the vault, enrollment service, hub registry and fleet behind traits;
//!   [`backend::local`] implements them on [`store`].
//! - [`store`]: the embedded SQLite store, its schema and migrations, key sealing.
//! - [`pki`]: keys, certificates, thumbprints, PEM and PKCS#12. Pure; never reads the clock.
//! - [`clock`]: the injectable clock (`--now`).
//! - [`serve`]: `certroll serve`, the Azure emulator: HTTPS listeners routed by Host name to
//!   one service per origin (Key Vault today), over the same `backend`/`ops` rules the CLI uses.
//! - [`notify`]: notices of fired `email-contacts` actions and renewals, queued in the store and
//!   delivered by mail (SMTP) and a hook command; run by `notify` and after every mutating verb.
//!   On azure it reads Key Vault through the [`backend::Vault`] trait; the ledger stays local.
#![warn(missing_docs)]

// `eprintln!` and `eprint!` for the whole crate (they shadow std's, which panic when stderr is a
// closed pipe, as in `certroll ... 2>&1 | head -c 1`): a message nobody can read any more is
// dropped, and the exit code still tells what happened.
macro_rules! eprintln {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr(), $($arg)*);
    }};
}
macro_rules! eprint {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = write!(std::io::stderr(), $($arg)*);
    }};
}

pub mod backend;
pub mod cli;
pub mod clock;
pub mod error;
pub mod fsutil;
pub mod notify;
pub mod ops;
pub mod output;
pub mod pki;
pub mod plan;
pub mod progress;
pub mod serve;
pub mod store;
