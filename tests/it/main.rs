//! certroll's integration tests: the real binary, real files, and the real `openssl` CLI as an
//! independent checker of every certificate and PKCS#12 file certroll writes.

// The azure measurements run the client in this process: give it the allocator the certroll
// binary has (src/main.rs), so what they time is what a verb does.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

// Shared helpers: a temp dir with a pinned clock, running certroll and openssl.
mod util;

// The plan: broken plans are refused with a location and touch nothing.
mod plan;
// `issue`, `status`, idempotency, dry runs, targets.
mod issue;
// `export`: chains, keys, PFX, refusals.
mod export;
// Store sealing, key files, permissions, concurrent writers.
mod store;
// `revoke`: disabled enrollments, hub identities and CRLs.
mod revoke;
// `reprovision`: the registration flow under each reprovision policy.
mod reprovision;
// Expiry rolls: slots, zero downtime, `--due`.
mod breach;
mod roll;
// Reruns and sequences of different rolls: nothing is redone, nobody is cut off.
mod rerun;
// Vault renewal: `reuse_key` keeps the public key, compared with openssl.
mod renewal;
// `vault`: versions, policies, attributes.
mod vault;
// `check`: monitoring codes over a certificate's life.
mod check;
// Mail to contacts and hooks, against a real SMTP server on loopback.
mod mail;
// `completions`, `man`, `init`.
mod docs;
// Beyond the happy path: status fields against openssl, profiles, broken plans per verb.
mod contract;
// `-o json` failures: one error document, never a second document after a report.
mod json_errors;
// Private keys: not printed, not in clear in the store, the store key never silently replaced.
mod secrets;
// `certroll serve` as Key Vault, driven by the official Python SDK.
mod serve_keyvault;
// One suite of vault behaviours on the local store and on the azure backend against serve.
mod conformance;
// The verbs themselves on a local plan and on the same plan on azure against serve.
mod azure_verbs;
// Delivery by direct method to serve's simulated devices, and the verbs lifted after them.
mod azure_verbs2;
// Breach rolls and expired-CA removal after CA rolls: no secondary without a primary, on both.
mod azure_breach;
// Breaches where DPS leaves the hub alone (`reprovision = "never"`), and `check` meanwhile.
mod azure_never;
// `notify` on azure: the same notices as on the local store, mailed to a real SMTP server.
mod azure_notify;
// What an operator sees on azure: progress, logs, TLS errors, exit codes.
mod azure_ux;
// `check` and `status` on azure after another client of DPS and the hub cut devices off.
mod azure_check;
// What the azure backend asks of the services, counted from serve's access log.
mod azure_requests;
// Reads a verb should not make, counted from serve's access log.
mod azure_reads;
// What certroll issued, recorded beside the fleet record: reads `check` and `issue` no longer make.
mod azure_record;
// A roll finds hub identities through the hub registry first, not a DPS read per device.
mod azure_hubfirst;

// DPS pacing against a throttled DPS: the rate the service admits, learnt from its 429s.
mod azure_pacing;

// HSM CAs on azure: Key Vault signs what certroll builds; the keys never leave it.
mod azure_hsm;
// Delivery on azure: what a device holds is what DPS saw; hooks and direct methods side by side.
mod azure_delivery;
// Deliveries owed on azure: recorded with the fleet record, settled when the channel took them.
mod azure_owed;
// Each delivery settled as it finishes; owed deliveries at `delivery_concurrency`.
mod azure_settle;
// Throttled rolls through the binary: the service that bounds a roll kept busy.
mod azure_overlap;

// Another client's certificate in one individual enrollment: named, left alone, taken back.
mod azure_foreign;
// A device another client cuts off while a roll of it goes on.
mod azure_midroll;
// Runs left open on azure and how they end: superseded work, refused credentials, take-backs.
mod azure_resume;
// A device DPS refused: what status, check and issue read of it on azure.
mod azure_refused;
// Issue 3 at fleet scale: yearly cron rounds, breaches, revokes, reprovision policies, kills.
mod fleet;
// Hostile input: output paths aimed at the state, FIFOs, devices, broken stores, far dates.
mod hostile;
// The crash harness: kills at chosen system calls during every mutating verb, then reruns.
mod crash;
// `certroll serve` as DPS and IoT Hub, driven by the official Azure IoT Node SDKs.
mod serve_dps_hub;
// Issue 10, vault and X.509 fidelity: exportability for life, key operations, vault-only
// lifetime actions, content types, chain order, legacy PKCS#12, string types, SANs, serials, PKCS#7.
mod fidelity;
// Issue 10, roll and registration fidelity: deleted certificates, capped renewals, not yet valid
// and the notBefore skew, `--now` far from the real clock.
mod fidelity2;
mod fidelity3;
// Issue 10, the leftovers of each kind: reruns after any other roll, capped CA renewals, `--due`
// beside an unissued device, disabled CAs, PEM text, PKCS#12 schemes, `serve --ca-out -`.
mod fidelity4;
// Issue 10, the third trial: the cron `--due` run beside odd corners of the fleet (expired, purged
// CAs, renamed and revoked groups), due CAs renewed by `--due`, guarded `--now`, a closed stderr.
mod fidelity5;
// Issue 10, the fourth trial: a group breach replaces every device under the compromised CA.
mod fidelity6;
// Issue 10, the fourth trial's leftovers (part A): plan errors first in the file and in words,
// flag ranges, wildcard and `_` SANs, subject syntax, the exit-code contract, sealed-key wording.
mod fidelity7;

// Issue 10, the fourth trial's leftovers: not yet valid certificates replaced, capped cron runs,
// purged and renamed enrollments named by check, expired leaves pruned, child CAs in a breach.
mod fidelity7b;
// Fuzzing (issue 9 item 13): what the fuzzers found, as regressions, and proptest properties.
mod fuzz_found;
mod properties;

// Issue 13, performance: decisions not made twice, nothing-due runs that record nothing, a pruned journal.
mod perf;
