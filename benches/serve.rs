//! Benchmark: `certroll serve` (the release binary) against a minimal axum handler over the same
//! TLS stack (rustls on aws-lc-rs, hyper http1, tokio), measured in the same run so the ratio
//! survives a noisy machine (issue 11, "Numbers").
//!
//!     cargo bench --bench serve                                   # 5 rounds of 10,000 a kind
//!     CERTROLL_BENCH_REQUESTS=2000 CERTROLL_BENCH_ROUNDS=3 cargo bench --bench serve
//!
//! Each round runs, with 32 concurrent clients (reqwest over rustls, keep-alive, one client and
//! its connection each): the baseline `GET /` (a fixed body), Key Vault `GET
//! /certificates/bench/` (bearer token), and DPS `PUT /enrollments/bench-NN` with `If-Match: *`
//! (an upsert of each client's own enrollment, with a SharedAccessSignature). Serve is reached
//! by its production host names (resolved to its listener), so Host routing, the Key Vault
//! challenge check and the SAS check all run. Printed: requests/s of each, the ratio of each
//! serve kind to the baseline of its round (min and median over the rounds), p50/p99 latency,
//! and serve's RSS (`/proc/PID/status` VmRSS) after 10,000, 100,000 and 200,000 serve requests
//! (or at the end of the run when it is shorter; 10 rounds reach 200,000).

// The same allocator as the certroll binary, so the baseline is not handicapped by malloc.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose};
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Concurrent clients (issue 11).
const CLIENTS: usize = 32;
const VAULT_HOST: &str = "bench.vault.azure.net";
const DPS_HOST: &str = "certroll-dps.azure-devices-provisioning.net";
const BASELINE_HOST: &str = "baseline.localhost";
const TOKEN: &str = "bench-owner-token";

const PLAN: &str = r#"version = 1

[policies.ca]
key = { type = "EC", curve = "P-256", exportable = false }
validity_days = 3650

[policies.device]
key = { type = "EC", curve = "P-256", exportable = true }
validity_days = 365

[ca.root]
subject = "CN=Bench Root"
policy = "ca"

[enrollments.gateway-01]
issuer = "root"
policy = "device"
hub = "bench-hub"

[serve]
vault = "bench"
"#;

fn env_usize(name: &str, default: usize) -> usize {
    match std::env::var(name) {
        Ok(v) => v
            .replace('_', "")
            .parse()
            .unwrap_or_else(|_| panic!("{name}={v}: not a whole number")),
        Err(_) => default,
    }
}

/// The running serve process; killed on drop.
struct Serve {
    child: Child,
    start: serde_json::Value,
    _dir: tempfile::TempDir,
}

impl Drop for Serve {
    fn drop(&mut self) {
        unsafe {
            libc::kill(self.child.id() as i32, libc::SIGTERM);
        }
        let _ = self.child.wait();
    }
}

impl Serve {
    fn spawn() -> Serve {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("plan.toml"), PLAN).unwrap();
        let mut child = Command::new(env!("CARGO_BIN_EXE_certroll"))
            .current_dir(dir.path())
            .args([
                "--plan",
                "plan.toml",
                "-o",
                "json",
                "serve",
                "--listen",
                "127.0.0.1:0",
            ])
            .args(["--ca-out", "ca.pem"])
            .env("CERTROLL_SERVE_TOKEN", TOKEN)
            // As a user starts it: with the access log (at info by default), thrown away.
            .env_remove("CERTROLL_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn certroll serve");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let start: serde_json::Value = serde_json::from_str(&line)
            .unwrap_or_else(|e| panic!("serve's start line is not JSON ({e}): {line:?}"));
        Serve {
            child,
            start,
            _dir: dir,
        }
    }

    fn addr(&self) -> SocketAddr {
        self.start["listen"].as_str().unwrap().parse().unwrap()
    }

    fn ca_pem(&self) -> Vec<u8> {
        std::fs::read(self._dir.path().join("ca.pem")).unwrap()
    }

    fn rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("VmRSS in /proc/PID/status")
    }

    /// The DPS service SAS policy key from the printed connection string.
    fn dps_key(&self) -> String {
        let cs = self.start["connection_strings"]["certroll-dps"]["provisioningserviceowner"]
            .as_str()
            .expect("the DPS owner connection string in the start line");
        cs.split(';')
            .find_map(|p| p.strip_prefix("SharedAccessKey="))
            .unwrap()
            .to_string()
    }
}

/// A CA and a server certificate for the baseline, both P-256 as serve's.
fn baseline_tls() -> (Arc<rustls::ServerConfig>, Vec<u8>) {
    let ca_key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.distinguished_name.push(DnType::CommonName, "Baseline CA");
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.key_usages = vec![KeyUsagePurpose::KeyCertSign];
    let ca_cert = ca.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca, ca_key);
    let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let leaf = CertificateParams::new(vec![BASELINE_HOST.to_string()])
        .unwrap()
        .signed_by(&key, &issuer)
        .unwrap();
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(
            vec![leaf.der().clone(), ca_cert.der().clone()],
            rustls_pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into()),
        )
        .unwrap();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    (Arc::new(config), ca_cert.pem().into_bytes())
}

/// The baseline: an axum router with one fixed-body handler, accepted as serve accepts (TLS,
/// then hyper http1 with the same builder).
async fn baseline_server(config: Arc<rustls::ServerConfig>) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(config);
    let app = axum::Router::new().route(
        "/",
        axum::routing::get(|| async { axum::Json(serde_json::json!({"value": "fixed"})) }),
    );
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                continue;
            };
            let _ = tcp.set_nodelay(true);
            let (acceptor, app) = (acceptor.clone(), app.clone());
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let svc = tower::service_fn(move |req: http::Request<hyper::body::Incoming>| {
                    use tower::ServiceExt as _;
                    app.clone().oneshot(req.map(axum::body::Body::new))
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .timer(hyper_util::rt::TokioTimer::new())
                    .serve_connection(
                        hyper_util::rt::TokioIo::new(tls),
                        hyper_util::service::TowerToHyperService::new(svc),
                    )
                    .await;
            });
        }
    });
    addr
}

/// What one kind of request is.
#[derive(Clone, Copy, PartialEq)]
enum Kind {
    Baseline,
    KeyVaultGet,
    DpsPut,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Baseline => "baseline GET (axum, fixed body)",
            Kind::KeyVaultGet => "Key Vault GET certificate",
            Kind::DpsPut => "DPS enrollment PUT (If-Match *)",
        }
    }
}

/// Everything the clients need.
struct Target {
    serve: SocketAddr,
    baseline: SocketAddr,
    roots: Vec<reqwest::Certificate>,
    dps_key: String,
    /// One enrollment body per client (its own registration id and certificate).
    bodies: Vec<String>,
}

impl Target {
    fn client(&self) -> reqwest::Client {
        let mut b = reqwest::Client::builder()
            .resolve(VAULT_HOST, self.serve)
            .resolve(DPS_HOST, self.serve)
            .resolve(BASELINE_HOST, self.baseline)
            .pool_max_idle_per_host(1)
            .timeout(Duration::from_secs(30));
        for root in &self.roots {
            b = b.add_root_certificate(root.clone());
        }
        b.build().unwrap()
    }

    fn sas(&self) -> String {
        let expiry = time::OffsetDateTime::now_utc().unix_timestamp() + 3600;
        certroll::serve::auth::sign_sas(DPS_HOST, &self.dps_key, expiry, "provisioningserviceowner").unwrap()
    }

    fn request(&self, client: &reqwest::Client, kind: Kind, n: usize, sas: &str) -> reqwest::RequestBuilder {
        let port = |a: SocketAddr| a.port();
        match kind {
            Kind::Baseline => client.get(format!("https://{BASELINE_HOST}:{}/", port(self.baseline))),
            Kind::KeyVaultGet => client
                .get(format!(
                    "https://{VAULT_HOST}:{}/certificates/bench/?api-version=7.5",
                    port(self.serve)
                ))
                .bearer_auth(TOKEN),
            Kind::DpsPut => client
                .put(format!(
                    "https://{DPS_HOST}:{}/enrollments/bench-{n:02}?api-version=2021-10-01",
                    port(self.serve)
                ))
                .header("Authorization", sas)
                .header("If-Match", "*")
                .header("Content-Type", "application/json")
                .body(self.bodies[n].clone()),
        }
    }
}

/// Runs `total` requests of `kind` over [`CLIENTS`] clients; requests/s and every latency (µs).
async fn run(target: &Arc<Target>, kind: Kind, total: usize) -> (f64, Vec<u32>) {
    let sas = Arc::new(target.sas());
    let start = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for c in 0..CLIENTS {
        let share = total / CLIENTS + usize::from(c < total % CLIENTS);
        let (target, sas) = (target.clone(), sas.clone());
        tasks.spawn(async move {
            let client = target.client();
            let mut latencies = Vec::with_capacity(share);
            for _ in 0..share {
                let t = Instant::now();
                let response = target.request(&client, kind, c, &sas).send().await.unwrap();
                let status = response.status();
                let body = response.bytes().await.unwrap();
                assert!(
                    status.is_success(),
                    "{}: HTTP {status}: {}",
                    kind.name(),
                    String::from_utf8_lossy(&body)
                );
                latencies.push(t.elapsed().as_micros().min(u32::MAX as u128) as u32);
            }
            latencies
        });
    }
    let mut all = Vec::with_capacity(total);
    while let Some(done) = tasks.join_next().await {
        all.extend(done.unwrap());
    }
    let rate = total as f64 / start.elapsed().as_secs_f64();
    (rate, all)
}

fn percentile(sorted: &[u32], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    f64::from(sorted[i]) / 1000.0
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// Setup through serve's own API: the Key Vault certificate the GETs read, and each client's
/// enrollment (created without If-Match, so the timed PUTs are updates).
async fn setup(target: &Arc<Target>) {
    let client = target.client();
    let port = target.serve.port();
    let created = client
        .post(format!(
            "https://{VAULT_HOST}:{port}/certificates/bench/create?api-version=7.5"
        ))
        .bearer_auth(TOKEN)
        .header("Content-Type", "application/json")
        .body(
            serde_json::json!({
                "policy": {
                    "key_props": {"kty": "EC", "crv": "P-256", "exportable": true},
                    "x509_props": {"subject": "CN=bench", "validity_months": 12},
                    "issuer": {"name": "Self"}
                },
                "tags": {"bench": "yes"}
            })
            .to_string(),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 202, "create: {}", created.text().await.unwrap());
    let sas = target.sas();
    for n in 0..CLIENTS {
        let put = client
            .put(format!(
                "https://{DPS_HOST}:{port}/enrollments/bench-{n:02}?api-version=2021-10-01"
            ))
            .header("Authorization", &sas)
            .header("Content-Type", "application/json")
            .body(target.bodies[n].clone())
            .send()
            .await
            .unwrap();
        assert_eq!(
            put.status(),
            200,
            "enrollment create: {}",
            put.text().await.unwrap()
        );
    }
}

fn enrollment_body(n: usize) -> String {
    let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
    p.distinguished_name = rcgen::DistinguishedName::new();
    p.distinguished_name
        .push(DnType::CommonName, format!("bench-{n:02}"));
    let cert = p.self_signed(&key).unwrap();
    serde_json::json!({
        "registrationId": format!("bench-{n:02}"),
        "attestation": {"type": "x509", "x509": {"clientCertificates": {"primary": {"certificate": cert.pem()}}}},
        "iotHubHostName": "bench-hub.azure-devices.net",
        "provisioningStatus": "enabled",
    })
    .to_string()
}

fn main() {
    // `cargo bench` passes `--bench`; `cargo test --benches` passes nothing: only a real run
    // measures.
    if !std::env::args().any(|a| a == "--bench") {
        eprintln!("serve bench: run with `cargo bench --bench serve`");
        return;
    }
    let per_kind = env_usize("CERTROLL_BENCH_REQUESTS", 10_000);
    let rounds = env_usize("CERTROLL_BENCH_ROUNDS", 5);
    assert!(
        per_kind >= CLIENTS && rounds >= 1,
        "need at least {CLIENTS} requests and one round"
    );
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let serve = Serve::spawn();
    let (tls, baseline_ca) = baseline_tls();
    runtime.block_on(async {
        let baseline = baseline_server(tls).await;
        let mut roots = reqwest::Certificate::from_pem_bundle(&serve.ca_pem()).unwrap();
        roots.push(reqwest::Certificate::from_pem(&baseline_ca).unwrap());
        let target = Arc::new(Target {
            serve: serve.addr(),
            baseline,
            roots,
            dps_key: serve.dps_key(),
            bodies: (0..CLIENTS).map(enrollment_body).collect(),
        });
        setup(&target).await;
        println!(
            "serve bench: {CLIENTS} clients, {per_kind} requests of each kind a round, {rounds} rounds; serve pid {}, RSS after setup {} KiB",
            serve.child.id(),
            serve.rss_kib()
        );
        let kinds = [Kind::Baseline, Kind::KeyVaultGet, Kind::DpsPut];
        let mut rates: Vec<Vec<f64>> = vec![Vec::new(); kinds.len()];
        let mut latencies: Vec<Vec<u32>> = vec![Vec::new(); kinds.len()];
        let mut served = 0usize;
        let mut rss_marks: Vec<(usize, u64)> = Vec::new();
        for round in 1..=rounds {
            let mut line = format!("round {round}:");
            for (k, kind) in kinds.iter().enumerate() {
                let (rate, lat) = run(&target, *kind, per_kind).await;
                rates[k].push(rate);
                latencies[k].extend(lat);
                line += &format!(" {}={rate:.0}/s", ["baseline", "kv_get", "dps_put"][k]);
                if *kind != Kind::Baseline {
                    let before = served;
                    served += per_kind;
                    for mark in [10_000, 100_000, 200_000] {
                        if before < mark && served >= mark {
                            rss_marks.push((served, serve.rss_kib()));
                        }
                    }
                }
            }
            // Per round, so growth can be told from a plateau.
            println!("{line} serve_rss={} KiB", serve.rss_kib());
        }
        if rss_marks.last().is_none_or(|(n, _)| *n != served) {
            rss_marks.push((served, serve.rss_kib()));
        }
        println!();
        for (k, kind) in kinds.iter().enumerate() {
            let lat = &mut latencies[k];
            lat.sort_unstable();
            let mut r = rates[k].clone();
            println!(
                "{:<34} median {:>7.0} req/s   p50 {:>6.2} ms   p99 {:>6.2} ms",
                kind.name(),
                median(&mut r),
                percentile(lat, 0.50),
                percentile(lat, 0.99)
            );
        }
        for (k, kind) in kinds.iter().enumerate().skip(1) {
            let mut ratios: Vec<f64> = rates[k].iter().zip(&rates[0]).map(|(s, b)| s / b).collect();
            let min = ratios.iter().copied().fold(f64::INFINITY, f64::min);
            println!(
                "{:<34} / baseline: min {min:.3}  median {:.3}  (over {rounds} rounds)",
                kind.name(),
                median(&mut ratios)
            );
        }
        for (n, rss) in &rss_marks {
            println!("serve RSS after {n:>7} serve requests: {rss} KiB");
        }
        if let [(_, first), .., (_, last)] = rss_marks.as_slice() {
            println!(
                "serve RSS growth between the marks: {} KiB",
                *last as i64 - *first as i64
            );
        }
    });
}
