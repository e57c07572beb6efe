//! Benchmark: `certroll issue` of one enrollment group of N EC P-256 devices into a fresh local
//! store, against a bare rcgen loop (key generation + signing of the same N leaves on all
//! cores), measured in the same run so the ratio survives a noisy machine.
//!
//!     cargo bench --bench issue_fleet                      # N = 100,000
//!     CERTROLL_BENCH_DEVICES=20000 cargo bench --bench issue_fleet
//!
//! Goals: issue (issue #2) ratio <= 1.5 and peak RSS < 300 MB; rolling every device of the group
//! (`roll-secondary group:fleet`, issue #3) within 1.5x of the bare loop for the same leaves.
//! The bare loop and the roll take the best of `CERTROLL_BENCH_ROUNDS` (3) runs each.

// The same allocator as the certroll binary, so the bare loop is not handicapped by malloc.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use rayon::prelude::*;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SerialNumber,
};
use std::process::Command;
use std::time::{Duration, Instant};

/// The bare loop; with `validate`, each leaf is also path-validated against the CA with
/// rustls-webpki, as the enrollment service does when the device registers.
fn bare_loop(n: usize, validate: bool) -> Duration {
    let ca_key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.distinguished_name.push(DnType::CommonName, "Bench CA");
    ca.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let ca_der = ca.self_signed(&ca_key).unwrap().der().to_vec();
    let issuer = Issuer::new(ca, ca_key);
    let ca_cert = rustls_pki_types::CertificateDer::from(ca_der.as_slice());
    let anchor = webpki::anchor_from_trusted_cert(&ca_cert).unwrap();
    let now = time::OffsetDateTime::now_utc();
    let start = Instant::now();
    let total: usize = (1..=n)
        .into_par_iter()
        .map(|i| {
            let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
            let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
            p.distinguished_name = rcgen::DistinguishedName::new();
            p.distinguished_name
                .push(DnType::CommonName, format!("bench-{i:06}"));
            p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
            p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
            p.is_ca = IsCa::ExplicitNoCa;
            p.not_before = now;
            p.not_after = now + time::Duration::days(365);
            p.serial_number = Some(SerialNumber::from_slice(&(i as u128).to_be_bytes()));
            p.use_authority_key_identifier_extension = true;
            let cert = p.signed_by(&key, &issuer).unwrap();
            if validate {
                let ee = webpki::EndEntityCert::try_from(cert.der()).unwrap();
                let time = rustls_pki_types::UnixTime::since_unix_epoch(Duration::from_secs(
                    now.unix_timestamp() as u64 + 60,
                ));
                ee.verify_for_usage(
                    webpki::ALL_VERIFICATION_ALGS,
                    std::slice::from_ref(&anchor),
                    &[],
                    time,
                    webpki::KeyUsage::client_auth(),
                    None,
                    None,
                )
                .unwrap();
            }
            cert.der().len() + key.serialize_der().len()
        })
        .sum();
    assert!(total > 0);
    start.elapsed()
}

fn plan(n: usize) -> String {
    format!(
        r#"version = 1
[backend]
path = "state.db"

[policies.device]
key = {{ type = "EC", curve = "P-256" }}
validity_days = 365
key_usage = ["digitalSignature"]
extended_key_usage = ["clientAuth"]

[policies.ca]
key = {{ type = "EC", curve = "P-256", exportable = false }}
validity_days = 3650

[ca.root]
subject = "CN=Bench Root"
policy = "ca"

[ca.factory]
subject = "CN=Bench Factory"
issuer = "root"
path_len = 0
policy = "ca"

[groups.fleet]
signing_ca = "factory"
hub = "bench-hub"
device_policy = "device"
devices = {{ prefix = "bench-", count = {n} }}
"#
    )
}

/// Runs certroll; returns its wall time and peak RSS in bytes.
fn run_certroll(dir: &std::path::Path, args: &[&str]) -> (Duration, u64) {
    let start = Instant::now();
    let status = Command::new(env!("CARGO_BIN_EXE_certroll"))
        .args(args)
        .current_dir(dir)
        .env_remove("CERTROLL_NOW")
        .status()
        .expect("run certroll");
    let elapsed = start.elapsed();
    assert!(status.success(), "certroll {args:?} failed");
    // SAFETY: getrusage only writes into the struct we pass.
    let peak = unsafe {
        let mut usage: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_CHILDREN, &mut usage);
        usage.ru_maxrss as u64 * 1024
    };
    (elapsed, peak)
}

fn main() {
    let n: usize = std::env::var("CERTROLL_BENCH_DEVICES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000);
    // `cargo bench` passes --bench; ignore arguments.
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::write(dir.path().join("plan.toml"), plan(n)).unwrap();

    // The bare loop and the roll are each timed `rounds` times and the best run counts: on a
    // shared machine a neighbour's burst slows one run, never speeds one up.
    let rounds: usize = std::env::var("CERTROLL_BENCH_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|&r| r > 0)
        .unwrap_or(3);
    println!(
        "issue_fleet: {n} EC P-256 devices, {} threads, best of {rounds} rounds",
        rayon::current_num_threads()
    );
    let bare = (0..rounds).map(|_| bare_loop(n, false)).min().unwrap();
    println!(
        "  bare rcgen loop (keygen + sign):   {:>8.2} s  ({:.0} certs/s)",
        bare.as_secs_f64(),
        n as f64 / bare.as_secs_f64()
    );
    let floor = bare_loop(n, true);
    println!(
        "  bare loop + path validation:       {:>8.2} s  (the registration check issue also does)",
        floor.as_secs_f64()
    );
    let (issue, peak) = run_certroll(dir.path(), &["--plan", "plan.toml", "-q", "issue"]);
    println!(
        "  certroll issue (fresh store):      {:>8.2} s  ({:.0} devices/s)",
        issue.as_secs_f64(),
        n as f64 / issue.as_secs_f64()
    );
    let (again, _) = run_certroll(dir.path(), &["--plan", "plan.toml", "-q", "issue"]);
    println!(
        "  certroll issue (rerun, no-op):     {:>8.2} s",
        again.as_secs_f64()
    );
    let ratio = issue.as_secs_f64() / bare.as_secs_f64();
    println!("  ratio certroll / bare:             {ratio:>8.2}  (goal <= 1.50)");
    println!(
        "  ratio certroll / (bare + validation): {:>5.2}",
        issue.as_secs_f64() / floor.as_secs_f64()
    );
    println!(
        "  certroll peak RSS:                 {:>8.1} MB (goal < 300 MB)",
        peak as f64 / 1e6
    );
    // Each round rolls the same issued store: a copy taken after `issue` is put back first.
    let store = dir.path().join("state.db");
    let issued = dir.path().join("issued.db");
    std::fs::copy(&store, &issued).expect("copy the issued store");
    let mut rolls = Vec::new();
    for _ in 0..rounds {
        std::fs::copy(&issued, &store).expect("restore the issued store");
        rolls.push(run_certroll(
            dir.path(),
            &["--plan", "plan.toml", "-q", "roll-secondary", "group:fleet"],
        ));
    }
    let (rolled, roll_peak) = rolls.into_iter().min().unwrap();
    println!(
        "  certroll roll-secondary group:     {:>8.2} s  ({:.0} devices/s, peak RSS {:.1} MB)",
        rolled.as_secs_f64(),
        n as f64 / rolled.as_secs_f64(),
        roll_peak as f64 / 1e6
    );
    let (roll_again, _) = run_certroll(
        dir.path(),
        &["--plan", "plan.toml", "-q", "roll-secondary", "group:fleet"],
    );
    println!(
        "  certroll roll (rerun, no-op):      {:>8.2} s",
        roll_again.as_secs_f64()
    );
    let roll_ratio = rolled.as_secs_f64() / bare.as_secs_f64();
    println!("  ratio roll / bare:                 {roll_ratio:>8.2}  (goal <= 1.50)");
    let db = std::fs::metadata(dir.path().join("state.db"))
        .map(|m| m.len())
        .unwrap_or(0);
    println!("  store size:                        {:>8.1} MB", db as f64 / 1e6);
}
