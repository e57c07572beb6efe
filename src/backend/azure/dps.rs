//! The Device Provisioning Service's service API (azure-wire.md §2: individual enrollments,
//! enrollment groups, bulk operations, queries with continuation tokens, registration states)
//! as [`AzureEnrollmentService`], which implements
//! [`EnrollmentService`] against a real DPS; its CA
//! certificates go through the management plane ([`super::arm`]).
//!
//! Writes never overwrite a concurrent change: a create carries no `If-Match` (409 if someone
//! created it first), an update the etag it read (412 if it changed since); either way the
//! record is read again and certroll's fields applied to what is there now, so fields certroll
//! does not manage (initial twin, capabilities, ...) survive.
//!
//! DPS never returns an enrollment's certificates, only their thumbprints and names. The
//! service remembers every certificate it wrote or read from ARM, and asks a
//! [`CertificateSource`] (the vault, wired by the backend) for the rest.

use super::arm::ArmCertificates;
use super::rest::{Call, RestClient, ServiceSpec, if_match, segment};
use super::sas::{SasKey, SasPolicy};
use super::{SetupError, client_options, http_client, runtime};
use crate::backend::registration::{self, Decision};
use crate::backend::types::*;
use crate::backend::{BackendError, EnrollmentService, Result};
use crate::plan::AzureConfig;
use azure_core::credentials::TokenCredential;
use azure_core::http::Method;
use serde_json::{Value, json};
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use time::OffsetDateTime;

/// The api-version of the DPS service API.
pub const API_VERSION: &str = "2021-10-01";
/// DPS's documented limit for one unit: 1,000 operations a minute.
pub const DEFAULT_RATE: f64 = 1000.0 / 60.0;
/// Most enrollments one bulk operation may carry.
pub const BULK_LIMIT: usize = 10;

/// Most enrollment reads kept for the writes that follow them (`seen`), about 2 KiB each.
const SEEN_LIMIT: usize = 50_000;
/// Records a query page asks for (the service may answer fewer; pages are followed by token).
const PAGE_SIZE: usize = 1000;
/// From how many enrollments one read asks for, they are read by the scan (the query of every
/// enrollment) rather than one GET each.
const SCAN_FROM: usize = 50;
/// How many times a write is re-read and re-applied after 409/412.
const MAX_PRECONDITION_RETRIES: usize = 5;

/// Where the DER of a certificate DPS names only by its SHA-1 thumbprint comes from.
pub trait CertificateSource: Send + Sync {
    /// The certificate with this SHA-1 thumbprint (upper-case hex): `Ok(None)` when the source
    /// holds none; an error when it could not look (the vault refused the credential, say), so
    /// a reader that then has no certificate reports that cause rather than a missing record.
    fn certificate(&self, sha1_thumbprint: &str) -> Result<Option<Vec<u8>>>;

    /// As [`certificate`](Self::certificate), for a certificate DPS holds in the enrollment or
    /// group named `whose` (its registration id or group name): a source that knows where the
    /// certificates of `whose` are kept looks there first.
    fn certificate_of(&self, sha1_thumbprint: &str, _whose: &str) -> Result<Option<Vec<u8>>> {
        self.certificate(sha1_thumbprint)
    }
}

/// DPS (service API over SAS tokens) and its CA certificates (ARM over Entra tokens).
pub struct AzureEnrollmentService {
    rt: tokio::runtime::Runtime,
    dps: RestClient,
    arm: Option<ArmCertificates>,
    /// Hub host name → the plan's hub name.
    hub_names: BTreeMap<String, String>,
    /// The plan's hub name → host name.
    hub_hosts: BTreeMap<String, String>,
    /// Certificates seen, by SHA-1 thumbprint.
    known: Mutex<HashMap<String, Vec<u8>>>,
    /// What the last read of each enrollment saw (`None`: absent), taken by the next write of
    /// it so a read-then-write verb costs no second GET. A stale entry is safe: its write
    /// fails its precondition (412, or 409 on create) and is read again and re-applied.
    seen: Mutex<HashMap<String, Option<Record>>>,
    /// The scan of every individual enrollment, read as far as reads of many ids needed it.
    scan: tokio::sync::Mutex<Scan>,
    source: Option<Box<dyn CertificateSource>>,
}

/// DPS answers no query for chosen enrollments (only `*`, every record), so reads of many ids
/// go through one scan of the collection, resumed where the last read left it and kept for the
/// reads that follow: a roll of the whole fleet costs one pass of query pages, not a GET per
/// enrollment. Each record is handed to one read only; a later read of the same id (or of one
/// written since) reads it again. A record handed out is as old as the page it came on; a write
/// built on it carries its etag, so a change made since fails the write's precondition and is
/// read again and re-applied.
#[derive(Default)]
struct Scan {
    /// Records the scan read that no read took yet, by registration id.
    records: HashMap<String, Record>,
    /// The token of the next page (None before the first page and after the last).
    continuation: Option<String>,
    /// The answer for `continuation`, fetched while the page before it was parsed: the
    /// service renders the next page while certroll reads this one, rather than each waiting
    /// for the other. At most one page ahead of what reads asked for.
    ahead: Option<super::rest::Answer>,
    /// Whether the first page was read.
    started: bool,
    /// Whether the last page was read: an id neither in `records` nor in `taken` was absent.
    done: bool,
    /// Ids a read took or a write changed since the scan passed them: read again by GET.
    taken: std::collections::HashSet<String>,
}

impl std::fmt::Debug for AzureEnrollmentService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AzureEnrollmentService")
            .field("dps", &self.dps)
            .field("arm", &self.arm)
            .finish_non_exhaustive()
    }
}

/// A record as DPS holds it: the full JSON and its etag.
struct Record {
    json: Value,
    etag: String,
}

fn record(json: Value) -> Record {
    let etag = json["etag"].as_str().unwrap_or("*").to_string();
    Record { json, etag }
}

fn pem_of(der: &[u8]) -> String {
    // The CLI sends PEM text, as DPS's examples do.
    crate::pki::pem::cert_to_pem(der)
}

fn reprovision_json(policy: &str) -> Value {
    let (update, migrate) = match policy {
        "reset" => (true, false),
        "never" => (false, true),
        _ => (true, true),
    };
    json!({"updateHubAssignment": update, "migrateDeviceData": migrate})
}

fn reprovision_of(v: &Value) -> String {
    let p = &v["reprovisionPolicy"];
    if p["updateHubAssignment"].as_bool() == Some(false) {
        "never".into()
    } else if p["migrateDeviceData"].as_bool() == Some(false) {
        "reset".into()
    } else {
        "migrate".into()
    }
}

/// What one attestation slot holds, as [`AzureEnrollmentService::resolve`] finds it.
enum Held {
    /// Nothing.
    Empty,
    /// A certificate certroll knows (DER).
    Known(Vec<u8>),
    /// One it did not issue.
    Foreign(ForeignCertificate),
}

/// The slots of `base` (what DPS holds now) that hold a certificate another client put
/// there, which a write of `e` keeps as they are (`[primary, secondary]`): `e` read it (it
/// is in [`IndividualEnrollment::foreign`]) and leaves that slot empty, as a revoke that
/// only disables the enrollment does. A write that would drop or replace one is refused,
/// unless `e` takes it back ([`IndividualEnrollment::take_back`]). `base` may be newer than
/// what the writer read (a re-read after 412), so its slots are judged here, by thumbprint:
/// `known` tells one certroll issued.
fn foreign_kept(
    e: &IndividualEnrollment,
    base: &Value,
    known: &dyn Fn(&str) -> bool,
) -> Result<[Option<Value>; 2]> {
    let certs = &base["attestation"]["x509"]["clientCertificates"];
    let ours: Vec<String> = [&e.primary, &e.secondary]
        .into_iter()
        .flatten()
        .map(|d| crate::pki::sha1_thumbprint(d))
        .collect();
    let mut kept = [None, None];
    for ((which, mine), keep) in ["primary", "secondary"]
        .into_iter()
        .zip([&e.primary, &e.secondary])
        .zip(kept.iter_mut())
    {
        let slot = &certs[which];
        let Some(tp) = slot["info"]["sha1Thumbprint"]
            .as_str()
            .map(str::to_ascii_uppercase)
        else {
            continue;
        };
        if ours.contains(&tp) || known(&tp) {
            continue;
        }
        let read = e.foreign.iter().any(|f| f.thumbprint == tp);
        if read && e.take_back {
            continue;
        }
        if read && mine.is_none() {
            *keep = Some(slot.clone());
            continue;
        }
        let f = ForeignCertificate {
            slot: which,
            thumbprint: tp,
            subject: slot["info"]["subjectName"]
                .as_str()
                .unwrap_or_default()
                .to_string(),
            not_before: None,
            not_after: None,
        };
        return Err(BackendError::Refused(format!(
            "{}; it was not overwritten: {}",
            f.describe(&e.registration_id),
            ForeignCertificate::remedy(&e.registration_id)
        )));
    }
    Ok(kept)
}

fn parse_time(v: &Value) -> Option<OffsetDateTime> {
    OffsetDateTime::parse(v.as_str()?, &time::format_description::well_known::Rfc3339).ok()
}

/// Removes what DPS computes itself, so a record read can be sent back.
fn writable(mut json: Value) -> Value {
    if let Some(o) = json.as_object_mut() {
        for read_only in [
            "registrationState",
            "createdDateTimeUtc",
            "lastUpdatedDateTimeUtc",
            "etag",
        ] {
            o.remove(read_only);
        }
    } else {
        json = json!({});
    }
    json
}

impl AzureEnrollmentService {
    /// Builds the DPS client for the plan's `dps` (its SAS key read from `sas_key_env` now) and,
    /// when `dps.resource_id` is set, the ARM client for its CA certificates with `credential`
    /// (the plan's `auth`). Fails when the plan has no `dps` or the key's variable is unset.
    pub fn new(
        config: &AzureConfig,
        credential: Arc<dyn TokenCredential>,
    ) -> std::result::Result<AzureEnrollmentService, SetupError> {
        Self::new_with_env(config, credential, &|v| std::env::var(v).ok())
    }

    /// As [`new`](Self::new), reading the variables through `env` (tests, which cannot change
    /// the process environment safely while other threads run).
    pub fn new_with_env(
        config: &AzureConfig,
        credential: Arc<dyn TokenCredential>,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> std::result::Result<AzureEnrollmentService, SetupError> {
        let dps = config
            .dps
            .as_ref()
            .ok_or_else(|| SetupError::Client("the plan's [backend] has no `dps`".into()))?;
        let http = http_client(config)?;
        let key = SasKey::from_env(&dps.sas_policy, &dps.sas_key_env, env)?;
        let client = RestClient::new(
            ServiceSpec {
                service: "DPS",
                base: format!("https://{}", dps.host),
                api_version: API_VERSION,
                default_rate: DEFAULT_RATE,
                burst_secs: 0.5,
            },
            client_options(http.clone()),
            SasPolicy::new(&dps.host, key),
            dps.limits,
        )?;
        let arm = dps
            .resource_id
            .as_deref()
            .map(|id| ArmCertificates::new(id, client_options(http.clone()), credential, dps.limits))
            .transpose()?;
        let hub_hosts: BTreeMap<String, String> = config
            .hubs
            .iter()
            .map(|(name, hub)| (name.clone(), hub.host.to_ascii_lowercase()))
            .collect();
        let hub_names = hub_hosts.iter().map(|(n, h)| (h.clone(), n.clone())).collect();
        Ok(AzureEnrollmentService {
            rt: runtime()?,
            dps: client,
            arm,
            hub_names,
            hub_hosts,
            known: Mutex::new(HashMap::new()),
            seen: Mutex::new(HashMap::new()),
            scan: tokio::sync::Mutex::new(Scan::default()),
            source: None,
        })
    }

    /// Where certificates DPS names only by thumbprint are looked up (the vault).
    pub fn set_certificate_source(&mut self, source: Box<dyn CertificateSource>) {
        self.source = Some(source);
    }

    /// The rate the DPS client paces its requests at now, per second (the plan's, or lower
    /// after DPS throttled it).
    pub fn rate(&self) -> Option<f64> {
        self.dps.rate()
    }

    /// Keeps what a read of enrollment `id` saw for its next write (see `seen`).
    fn keep(&self, id: &str, read: Option<Record>) {
        let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        // Reads never followed by a write (status, check) must not grow this without bound.
        if seen.len() >= SEEN_LIMIT {
            seen.clear();
        }
        seen.insert(id.to_string(), read);
    }

    fn remember(&self, der: &[u8]) {
        let tp = crate::pki::sha1_thumbprint(der);
        self.known
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(tp)
            .or_insert_with(|| der.to_vec());
    }

    /// The certificate DPS describes in an `X509CertificateWithInfo`; one certroll has no
    /// record of is an error (an enrollment group's signing certificate).
    fn certificate(&self, slot: &Value, whose: &str) -> Result<Option<Vec<u8>>> {
        match self.resolve(slot, whose, "signing")? {
            Held::Empty => Ok(None),
            Held::Known(der) => Ok(Some(der)),
            Held::Foreign(f) => Err(BackendError::Refused(format!(
                "DPS holds certificate {} ({}) in `{whose}`, which certroll has no record of",
                f.thumbprint,
                if f.subject.is_empty() {
                    "unknown subject"
                } else {
                    &f.subject
                }
            ))),
        }
    }

    /// What a slot (`which`: `primary` or `secondary`) of `whose` holds: nothing, a certificate
    /// certroll knows (from the record, its reads and writes, or the vault), or one it cannot
    /// resolve, described from DPS's `info`.
    fn resolve(&self, slot: &Value, whose: &str, which: &'static str) -> Result<Held> {
        if slot.is_null() {
            return Ok(Held::Empty);
        }
        if let Some(text) = slot["certificate"].as_str()
            && let Some(der) = crate::pki::pem::certs_from_pem(text.as_bytes())
                .ok()
                .and_then(|c| c.into_iter().next())
        {
            return Ok(Held::Known(der));
        }
        let info = &slot["info"];
        let Some(tp) = info["sha1Thumbprint"].as_str().map(str::to_ascii_uppercase) else {
            return Ok(Held::Empty);
        };
        if let Some(der) = self.known.lock().unwrap_or_else(|p| p.into_inner()).get(&tp) {
            return Ok(Held::Known(der.clone()));
        }
        if let Some(source) = &self.source
            && let Some(der) = source.certificate_of(&tp, whose)?
        {
            self.remember(&der);
            return Ok(Held::Known(der));
        }
        Ok(Held::Foreign(ForeignCertificate {
            slot: which,
            thumbprint: tp,
            subject: info["subjectName"].as_str().unwrap_or_default().to_string(),
            not_before: parse_time(&info["notBeforeUtc"]),
            not_after: parse_time(&info["notAfterUtc"]),
        }))
    }

    /// [`foreign_kept`] with the certificates this process resolved or wrote as the known ones.
    fn foreign_kept(&self, e: &IndividualEnrollment, base: &Value) -> Result<[Option<Value>; 2]> {
        let known = self.known.lock().unwrap_or_else(|p| p.into_inner());
        foreign_kept(e, base, &|tp| known.contains_key(tp))
    }

    fn hub_name(&self, v: &Value) -> String {
        let host = v["iotHubs"]
            .as_array()
            .and_then(|h| h.first())
            .and_then(Value::as_str)
            .or_else(|| v["iotHubHostName"].as_str())
            .or_else(|| v["assignedHub"].as_str())
            .unwrap_or_default()
            .to_ascii_lowercase();
        self.hub_names
            .get(&host)
            .cloned()
            .unwrap_or_else(|| host.split('.').next().unwrap_or_default().to_string())
    }

    fn hub_host(&self, hub: &str) -> Result<String> {
        self.hub_hosts
            .get(hub)
            .cloned()
            .ok_or_else(|| BackendError::Refused(format!("hub `{hub}` is not in the plan's [backend.hubs]")))
    }

    fn individual_of(&self, v: &Value) -> Result<IndividualEnrollment> {
        let id = v["registrationId"].as_str().unwrap_or_default().to_string();
        let certs = &v["attestation"]["x509"]["clientCertificates"];
        // A certificate another client put into a slot is reported with the enrollment, not
        // an error for the whole read: one such enrollment must not blind a fleet's status.
        let mut foreign = Vec::new();
        let mut slots = [None, None];
        for (slot, which) in slots.iter_mut().zip(["primary", "secondary"]) {
            match self.resolve(&certs[which], &id, which)? {
                Held::Empty => {}
                Held::Known(der) => *slot = Some(der),
                Held::Foreign(f) => foreign.push(f),
            }
        }
        let [primary, secondary] = slots;
        Ok(IndividualEnrollment {
            primary,
            secondary,
            status: Status::parse(v["provisioningStatus"].as_str().unwrap_or("enabled")),
            reprovision: reprovision_of(v),
            hub: self.hub_name(v),
            registration_id: id,
            foreign,
            take_back: false,
        })
    }

    fn group_of(
        &self,
        v: &Value,
        cas: &dyn Fn(&str) -> Result<Option<ServiceCa>>,
    ) -> Result<EnrollmentGroup> {
        let name = v["enrollmentGroupId"].as_str().unwrap_or_default().to_string();
        let x509 = &v["attestation"]["x509"];
        let mut slots = [None, None];
        for (i, which) in ["primary", "secondary"].into_iter().enumerate() {
            if let Some(reference) = x509["caReferences"][which].as_str() {
                let ca = cas(reference)?
                    .ok_or_else(|| BackendError::NotFound(format!("CA certificate `{reference}`")))?;
                slots[i] = Some(Slot {
                    cert_der: ca.cert_der,
                    ca_reference: Some(reference.to_string()),
                });
            } else if let Some(der) = self.certificate(&x509["signingCertificates"][which], &name)? {
                slots[i] = Some(Slot {
                    cert_der: der,
                    ca_reference: None,
                });
            }
        }
        let [primary, secondary] = slots;
        Ok(EnrollmentGroup {
            primary,
            secondary,
            status: Status::parse(v["provisioningStatus"].as_str().unwrap_or("enabled")),
            reprovision: reprovision_of(v),
            hub: self.hub_name(v),
            name,
        })
    }

    /// `base` (a record read, or nothing) with certroll's fields of `e`.
    fn individual_json(&self, e: &IndividualEnrollment, base: Option<&Value>) -> Result<Value> {
        self.individual_json_on(e, base.cloned().unwrap_or_else(|| json!({})))
    }

    /// [`individual_json`](Self::individual_json) on a record this call may consume.
    fn individual_json_on(&self, e: &IndividualEnrollment, base: Value) -> Result<Value> {
        let [keep_primary, keep_secondary] = self.foreign_kept(e, &base)?;
        let mut out = writable(base);
        let slot = |d: &Option<Vec<u8>>| d.as_deref().map(|d| json!({"certificate": pem_of(d)}));
        out["registrationId"] = json!(e.registration_id);
        if out.get("deviceId").is_none_or(Value::is_null) {
            out["deviceId"] = json!(e.registration_id);
        }
        // The certificate info DPS sent for a slot kept (another client's) goes back as read:
        // DPS keeps a slot whose certificate is unchanged.
        let primary = slot(&e.primary).or(keep_primary);
        let secondary = slot(&e.secondary).or(keep_secondary);
        out["attestation"] = json!({"type": "x509", "x509": {"clientCertificates": {
            "primary": primary, "secondary": secondary}}});
        out["provisioningStatus"] = json!(e.status.as_str());
        out["reprovisionPolicy"] = reprovision_json(&e.reprovision);
        out["iotHubs"] = json!([self.hub_host(&e.hub)?]);
        out["allocationPolicy"] = json!("static");
        if let Some(o) = out.as_object_mut() {
            o.remove("iotHubHostName");
        }
        Ok(out)
    }

    fn group_json(&self, g: &EnrollmentGroup, base: Option<&Value>) -> Result<Value> {
        let mut out = writable(base.cloned().unwrap_or_else(|| json!({})));
        out["enrollmentGroupId"] = json!(g.name);
        let referenced = [&g.primary, &g.secondary]
            .into_iter()
            .flatten()
            .any(|s| s.ca_reference.is_some());
        let x509 = if referenced {
            let name = |s: &Option<Slot>| s.as_ref().and_then(|s| s.ca_reference.clone());
            json!({"caReferences": {"primary": name(&g.primary), "secondary": name(&g.secondary)}})
        } else {
            let slot = |s: &Option<Slot>| s.as_ref().map(|s| json!({"certificate": pem_of(&s.cert_der)}));
            json!({"signingCertificates": {"primary": slot(&g.primary), "secondary": slot(&g.secondary)}})
        };
        out["attestation"] = json!({"type": "x509", "x509": x509});
        out["provisioningStatus"] = json!(g.status.as_str());
        out["reprovisionPolicy"] = reprovision_json(&g.reprovision);
        out["iotHubs"] = json!([self.hub_host(&g.hub)?]);
        out["allocationPolicy"] = json!("static");
        if let Some(o) = out.as_object_mut() {
            o.remove("iotHubHostName");
        }
        Ok(out)
    }

    fn arm(&self) -> Result<&ArmCertificates> {
        self.arm.as_ref().ok_or_else(|| {
            BackendError::Refused(
                "the plan's `dps` has no `resource_id`, so its CA certificates (ARM) cannot be reached"
                    .into(),
            )
        })
    }

    // ------------------------------------------------------------ wire operations

    /// `collection` is `enrollments` or `enrollmentGroups`.
    async fn read(&self, collection: &str, id: &str, what: &str) -> Result<Option<Record>> {
        let operation = format!("get {what}");
        let call = Call::new(
            Method::Get,
            format!("/{collection}/{}", segment(id)),
            &operation,
            id,
        );
        let answer = self.dps.expect(&call, &[200, 404]).await?;
        Ok((answer.status == 200).then(|| record(answer.json())))
    }

    /// Every record of a query, page by page (`x-ms-continuation`).
    async fn query(&self, collection: &str, what: &str) -> Result<Vec<Value>> {
        let operation = format!("query {what}");
        let mut out = Vec::new();
        let mut continuation: Option<String> = None;
        loop {
            let mut call = Call::new(Method::Post, format!("/{collection}/query"), &operation, "*")
                .header("x-ms-max-item-count", PAGE_SIZE.to_string())
                .json(json!({"query": "*"}));
            if let Some(token) = &continuation {
                call = call.header("x-ms-continuation", token.clone());
            }
            let answer = self.dps.expect(&call, &[200]).await?;
            match answer.json() {
                Value::Array(items) => out.extend(items),
                _ => return Err(self.dps.error(&call, &answer)),
            }
            continuation = answer
                .header("x-ms-continuation")
                .filter(|t| !t.is_empty())
                .map(str::to_string);
            if continuation.is_none() {
                return Ok(out);
            }
        }
    }

    /// Individual enrollments `ids` (in order; None where absent): by [`Scan`] when there are
    /// [`SCAN_FROM`] or more the scan can still answer, by one GET each otherwise.
    async fn read_individuals(&self, ids: &[String]) -> Result<Vec<Option<Record>>> {
        let mut out: Vec<Option<Option<Record>>> = (0..ids.len()).map(|_| None).collect();
        {
            let mut scan = self.scan.lock().await;
            let eligible = ids.iter().filter(|id| !scan.taken.contains(*id)).count();
            // A few ids are worth the scan's first page: a DPS whose enrollments fit on it (most
            // fleets) answers them all, those present and those absent (the devices of a
            // group, which have none), in one request. Past that page a few are read by GET.
            let small = eligible < SCAN_FROM;
            if eligible >= SCAN_FROM || (eligible >= 2 && !scan.started) {
                loop {
                    let mut left = 0;
                    for (slot, id) in out.iter_mut().zip(ids) {
                        if slot.is_some() || scan.taken.contains(id) {
                            continue;
                        }
                        if let Some(r) = scan.records.remove(id) {
                            *slot = Some(Some(r));
                        } else if scan.done {
                            *slot = Some(None);
                        } else {
                            left += 1;
                        }
                    }
                    // Records kept for later reads are bounded: past the bound, GETs.
                    if left == 0 || scan.done || scan.records.len() >= SEEN_LIMIT || (small && scan.started) {
                        break;
                    }
                    self.scan_page(&mut scan).await?;
                }
                // A record handed out is this read's; an id the finished scan did not find stays
                // absent for the next read too (a write of it marks it, see `written`).
                for (slot, id) in out.iter().zip(ids) {
                    if matches!(slot, Some(Some(_))) {
                        scan.taken.insert(id.clone());
                    }
                }
            }
        }
        let reads = futures::future::join_all(out.into_iter().zip(ids).map(|(settled, id)| async move {
            match settled {
                Some(record) => Ok(record),
                None => self.read("enrollments", id, "enrollment").await,
            }
        }))
        .await;
        reads.into_iter().collect()
    }

    /// One page of the query of every enrollment, from `continuation` (None: the first).
    async fn query_page(&self, continuation: Option<&str>) -> Result<super::rest::Answer> {
        let mut call = Call::new(
            Method::Post,
            "/enrollments/query".into(),
            "query enrollments",
            "*",
        )
        .header("x-ms-max-item-count", PAGE_SIZE.to_string())
        .json(json!({"query": "*"}));
        if let Some(token) = continuation {
            call = call.header("x-ms-continuation", token.to_string());
        }
        let answer = self.dps.expect(&call, &[200]).await?;
        if !answer.body.trim_ascii_start().starts_with(b"[") {
            return Err(self.dps.error(&call, &answer));
        }
        Ok(answer)
    }

    /// Reads the scan's next page into it, and fetches the page after it meanwhile (see
    /// `Scan::ahead`). A page that cannot be read leaves the scan where it was.
    async fn scan_page(&self, scan: &mut Scan) -> Result<()> {
        let answer = match scan.ahead.take() {
            Some(answer) => answer,
            None => self.query_page(scan.continuation.as_deref()).await?,
        };
        let next = answer
            .header("x-ms-continuation")
            .filter(|t| !t.is_empty())
            .map(str::to_string);
        let ahead = async {
            match &next {
                Some(token) => self.query_page(Some(token)).await.ok(),
                None => None,
            }
        };
        let taken = &scan.taken;
        let read = async {
            let Value::Array(items) = answer.json() else {
                let call = Call::new(
                    Method::Post,
                    "/enrollments/query".into(),
                    "query enrollments",
                    "*",
                );
                return Err(self.dps.error(&call, &answer));
            };
            Ok(items
                .into_iter()
                .filter_map(|item| {
                    let id = item["registrationId"].as_str()?.to_string();
                    (!taken.contains(&id)).then(|| (id, record(item)))
                })
                .collect::<Vec<_>>())
        };
        // The fetch is polled first, so its request is out before this page is parsed. A page
        // ahead that failed is fetched again when it is needed, and fails then.
        let (ahead, read) = futures::join!(ahead, read);
        scan.records.extend(read?);
        scan.ahead = ahead;
        scan.started = true;
        scan.done = next.is_none();
        scan.continuation = next;
        Ok(())
    }

    /// Marks enrollments written: what the scan holds of them is no longer what DPS holds.
    async fn written(&self, ids: impl Iterator<Item = &String>) {
        let mut scan = self.scan.lock().await;
        if !scan.started {
            return;
        }
        for id in ids {
            scan.records.remove(id);
            scan.taken.insert(id.clone());
        }
    }

    /// Writes one record: created when absent (no If-Match), else updated with the etag read;
    /// on 409/412 read again and re-apply.
    async fn put_one(
        &self,
        collection: &str,
        id: &str,
        what: &str,
        mut current: Option<Option<Record>>,
        build: &(dyn Fn(Option<&Value>) -> Result<Value> + Sync),
    ) -> Result<()> {
        let operation = format!("put {what}");
        for _ in 0..=MAX_PRECONDITION_RETRIES {
            let existing = match current.take() {
                Some(c) => c,
                None => self.read(collection, id, what).await?,
            };
            let body = build(existing.as_ref().map(|r| &r.json))?;
            let mut call = Call::new(
                Method::Put,
                format!("/{collection}/{}", segment(id)),
                &operation,
                id,
            )
            .json(body);
            if let Some(r) = &existing {
                call = call.header("if-match", if_match(&r.etag));
            }
            let answer = self.dps.send(&call).await?;
            match answer.status {
                200 | 201 => return Ok(()),
                409 | 412 => continue,
                _ => return Err(self.dps.error(&call, &answer)),
            }
        }
        Err(BackendError::Remote {
            service: "DPS",
            operation,
            target: id.to_string(),
            status: Some(412),
            code: "PreconditionFailed".into(),
            message: format!("the record kept changing under {MAX_PRECONDITION_RETRIES} re-applied writes"),
        })
    }

    /// One bulk operation of at most [`BULK_LIMIT`] individual enrollments; returns the ids
    /// that lost a race (409 on create, 412 on update), to be written one by one.
    async fn bulk(&self, mode: &str, items: Vec<Value>) -> Result<Vec<String>> {
        let first = items[0]["registrationId"].as_str().unwrap_or_default();
        let target = format!("{} enrollments from `{first}`", items.len());
        let operation = format!("bulk {mode} enrollments");
        let call = Call::new(Method::Post, "/enrollments".into(), &operation, &target)
            .json(json!({"mode": mode, "enrollments": items}));
        let answer = self.dps.expect(&call, &[200]).await?;
        let body = answer.json();
        if body["isSuccessful"].as_bool() == Some(true) {
            return Ok(Vec::new());
        }
        let Some(errors) = body["errors"].as_array() else {
            return Err(self.dps.error(&call, &answer));
        };
        let mut raced = Vec::new();
        for e in errors {
            let id = e["registrationId"].as_str().unwrap_or_default().to_string();
            let code = e["errorCode"].as_i64().unwrap_or_default();
            if matches!(code / 1000, 409 | 412) {
                raced.push(id);
            } else {
                return Err(BackendError::Remote {
                    service: "DPS",
                    operation,
                    target: id,
                    status: u16::try_from(code / 1000).ok(),
                    code: code.to_string(),
                    message: e["errorStatus"].as_str().unwrap_or_default().to_string(),
                });
            }
        }
        Ok(raced)
    }

    async fn put_individuals_async(&self, batch: &[IndividualEnrollment]) -> Result<()> {
        let carried: Vec<Option<Option<Record>>> = {
            let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
            batch.iter().map(|e| seen.remove(&e.registration_id)).collect()
        };
        // What no read of this process carried is read now: many by the scan, a few by GET.
        let missing: Vec<String> = batch
            .iter()
            .zip(&carried)
            .filter(|(_, c)| c.is_none())
            .map(|(e, _)| e.registration_id.clone())
            .collect();
        let mut fresh = self.read_individuals(&missing).await?.into_iter();
        self.written(batch.iter().map(|e| &e.registration_id)).await;
        let reads: Vec<Result<Option<Record>>> = carried
            .into_iter()
            .map(|c| Ok(c.unwrap_or_else(|| fresh.next().flatten())))
            .collect();
        // What could refuse a body is checked before any request goes out.
        for e in batch {
            self.hub_host(&e.hub)?;
        }
        let (mut creates, mut updates) = (Vec::new(), Vec::new());
        for (e, read) in batch.iter().zip(reads) {
            match read? {
                None => creates.push((e, None)),
                Some(r) => updates.push((e, Some(r))),
            }
        }
        let stage = crate::progress::stage("DPS enrollments", batch.len() as u64);
        let stage = &stage;
        // Each request's bodies are built when it is first polled, so the first requests are
        // out while the later ones are built; bodies are moved into their requests, never
        // copied: each holds two PEM certificates.
        let mut work = Vec::new();
        for (mode, mut items) in [("create", creates), ("updateIfMatchETag", updates)] {
            while !items.is_empty() {
                let rest = items.split_off(items.len().min(BULK_LIMIT));
                let chunk = std::mem::replace(&mut items, rest);
                let n = chunk.len() as u64;
                work.push(async move {
                    let mut bodies = Vec::with_capacity(chunk.len());
                    for (e, read) in chunk {
                        bodies.push(match read {
                            None => self.individual_json_on(e, json!({}))?,
                            Some(r) => {
                                let mut body = self.individual_json_on(e, r.json)?;
                                body["etag"] = json!(r.etag);
                                body
                            }
                        });
                    }
                    let raced = self.bulk(mode, bodies).await;
                    stage.advance(n);
                    raced
                });
            }
        }
        let mut raced = Vec::new();
        for r in futures::future::join_all(work).await {
            raced.extend(r?);
        }
        for e in batch.iter().filter(|e| raced.contains(&e.registration_id)) {
            let build = |base: Option<&Value>| self.individual_json(e, base);
            self.put_one("enrollments", &e.registration_id, "enrollment", None, &build)
                .await?;
        }
        Ok(())
    }

    fn registration_of(&self, id: &str, v: &Value) -> RegistrationState {
        let hub = v["assignedHub"].as_str().map(|_| self.hub_name(v));
        RegistrationState {
            registration_id: v["registrationId"].as_str().unwrap_or(id).to_string(),
            status: v["status"].as_str().unwrap_or("unassigned").to_string(),
            substatus: v["substatus"].as_str().map(str::to_string),
            hub,
            cert_thumbprint: None,
            error: v["errorMessage"].as_str().map(str::to_string),
            error_code: v["errorCode"].as_i64(),
            enrollment_kind: None,
            enrollment_name: None,
            created: parse_time(&v["createdDateTimeUtc"]),
            updated: parse_time(&v["lastUpdatedDateTimeUtc"]),
            etag: v["etag"].as_str().map(|e| e.trim_matches('"').to_string()),
        }
    }

    /// The registration states DPS lists for enrollment group `group` (its devices assigned by
    /// it), page by page (`x-ms-continuation`), by registration id; empty when the group does
    /// not exist.
    async fn group_registrations(&self, group: &str) -> Result<HashMap<String, Value>> {
        let mut out = HashMap::new();
        let mut continuation: Option<String> = None;
        loop {
            let mut call = Call::new(
                Method::Post,
                format!("/registrations/{}/query", segment(group)),
                "query group registration states",
                group,
            )
            .header("x-ms-max-item-count", PAGE_SIZE.to_string());
            if let Some(token) = &continuation {
                call = call.header("x-ms-continuation", token.clone());
            }
            let answer = self.dps.expect(&call, &[200, 404]).await?;
            if answer.status == 404 {
                return Ok(out);
            }
            let Value::Array(items) = answer.json() else {
                return Err(self.dps.error(&call, &answer));
            };
            for item in items {
                if let Some(id) = item["registrationId"].as_str() {
                    out.insert(id.to_string(), item);
                }
            }
            continuation = answer
                .header("x-ms-continuation")
                .filter(|t| !t.is_empty())
                .map(str::to_string);
            if continuation.is_none() {
                return Ok(out);
            }
        }
    }

    async fn registration_async(&self, id: &str) -> Result<Option<RegistrationState>> {
        let call = Call::new(
            Method::Get,
            format!("/registrations/{}", segment(id)),
            "get registration state",
            id,
        );
        let answer = self.dps.expect(&call, &[200, 404]).await?;
        Ok((answer.status == 200).then(|| self.registration_of(id, &answer.json())))
    }
}

impl EnrollmentService for AzureEnrollmentService {
    fn ca(&self, name: &str) -> Result<Option<ServiceCa>> {
        let ca = self.rt.block_on(self.arm()?.get(name))?;
        if let Some(ca) = &ca {
            self.remember(&ca.cert_der);
        }
        Ok(ca)
    }

    fn cas(&self) -> Result<Vec<ServiceCa>> {
        let cas = self.rt.block_on(self.arm()?.list())?;
        cas.iter().for_each(|c| self.remember(&c.cert_der));
        Ok(cas)
    }

    fn upload_ca(&mut self, name: &str, cert_der: &[u8], _now: OffsetDateTime) -> Result<()> {
        crate::pki::CertInfo::from_der(cert_der)?;
        self.remember(cert_der);
        self.rt.block_on(self.arm()?.upload(name, cert_der))
    }

    fn delete_ca(&mut self, name: &str) -> Result<()> {
        self.rt.block_on(self.arm()?.delete(name))
    }

    fn verification_code(&mut self, name: &str, _now: OffsetDateTime) -> Result<String> {
        self.rt.block_on(self.arm()?.verification_code(name))
    }

    fn verify_ca(&mut self, name: &str, verification_cert_der: &[u8], _now: OffsetDateTime) -> Result<()> {
        self.rt.block_on(self.arm()?.verify(name, verification_cert_der))
    }

    fn group(&self, name: &str) -> Result<Option<EnrollmentGroup>> {
        let Some(r) = self
            .rt
            .block_on(self.read("enrollmentGroups", name, "enrollment group"))?
        else {
            return Ok(None);
        };
        self.group_of(&r.json, &|ca| self.ca(ca)).map(Some)
    }

    fn groups(&self) -> Result<Vec<EnrollmentGroup>> {
        let all = self
            .rt
            .block_on(self.query("enrollmentGroups", "enrollment groups"))?;
        // CA references are resolved from one listing, not one ARM call per group.
        let mut cas: Option<Vec<ServiceCa>> = None;
        let mut out = Vec::with_capacity(all.len());
        for v in &all {
            let needs_cas = v["attestation"]["x509"]["caReferences"].is_object();
            if needs_cas && cas.is_none() {
                cas = Some(self.cas()?);
            }
            let listed = cas.clone().unwrap_or_default();
            out.push(self.group_of(v, &|name| Ok(listed.iter().find(|c| c.name == name).cloned()))?);
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    fn put_group(&mut self, group: &EnrollmentGroup, _now: OffsetDateTime) -> Result<()> {
        if group.primary.is_none() && group.secondary.is_none() {
            // DPS has no X.509 group without a signing certificate (a PUT without one is 400):
            // a group whose every CA was taken out (a CA revoked) accepts no device, which on
            // DPS is a group that is not there. Deleting it is what a rerun finds done.
            let operation = "delete enrollment group";
            let call = Call::new(
                Method::Delete,
                format!("/enrollmentGroups/{}", segment(&group.name)),
                operation,
                &group.name,
            )
            .header("if-match", "*");
            return self
                .rt
                .block_on(self.dps.expect(&call, &[200, 204, 404]))
                .map(|_| ());
        }
        for slot in [&group.primary, &group.secondary].into_iter().flatten() {
            self.remember(&slot.cert_der);
        }
        let build = |base: Option<&Value>| self.group_json(group, base);
        self.rt
            .block_on(self.put_one("enrollmentGroups", &group.name, "enrollment group", None, &build))
    }

    fn individual(&self, registration_id: &str) -> Result<Option<IndividualEnrollment>> {
        let read = self.rt.block_on(async {
            // Read fresh now, so what the scan holds of it is older than what a caller has seen.
            self.written(std::iter::once(&registration_id.to_string())).await;
            self.read("enrollments", registration_id, "enrollment").await
        })?;
        let out = read.as_ref().map(|r| self.individual_of(&r.json)).transpose();
        self.keep(registration_id, read);
        out
    }

    fn individual_many(&self, ids: &[String]) -> Result<Vec<Option<IndividualEnrollment>>> {
        let reads = self.rt.block_on(self.read_individuals(ids))?;
        ids.iter()
            .zip(reads)
            .map(|(id, r)| {
                let out = r.as_ref().map(|r| self.individual_of(&r.json)).transpose();
                self.keep(id, r);
                out
            })
            .collect()
    }

    fn individuals(&self) -> Result<Vec<IndividualEnrollment>> {
        let all = self.rt.block_on(self.query("enrollments", "enrollments"))?;
        let mut out = all
            .iter()
            .map(|v| self.individual_of(v))
            .collect::<Result<Vec<_>>>()?;
        out.sort_by(|a, b| a.registration_id.cmp(&b.registration_id));
        Ok(out)
    }

    fn put_individuals(&mut self, batch: &[IndividualEnrollment], _now: OffsetDateTime) -> Result<()> {
        for e in batch {
            for der in [&e.primary, &e.secondary].into_iter().flatten() {
                self.remember(der);
            }
        }
        self.rt.block_on(self.put_individuals_async(batch))
    }

    fn register(
        &mut self,
        _batch: &[RegistrationRequest],
        _now: OffsetDateTime,
    ) -> Result<Vec<RegistrationState>> {
        Err(BackendError::Refused(
            "on Azure certroll does not register devices: each device registers itself with DPS \
             (use a direct method to ask it to)"
                .into(),
        ))
    }

    fn preview_register(
        &self,
        batch: &[RegistrationRequest],
        now: OffsetDateTime,
    ) -> Result<Vec<std::result::Result<Assignment, String>>> {
        let groups = match self.cas() {
            Ok(cas) => registration::usable_groups(self.groups()?, &cas),
            // Without `resource_id` there are no CA references to resolve, nor CAs to judge
            // signing certificates by: DPS judges those itself.
            Err(BackendError::Refused(_)) if self.arm.is_none() => {
                registration::groups_without_ca_list(self.groups()?)
            }
            Err(e) => return Err(e),
        };
        // Disabled enrollments holding a leaf, from the thumbprints DPS lists (no certificate
        // needs resolving for that).
        let all = self.rt.block_on(self.query("enrollments", "enrollments"))?;
        let mut disabled_by_tp: HashMap<String, Vec<String>> = HashMap::new();
        for v in all.iter().filter(|v| v["provisioningStatus"] == "disabled") {
            let certs = &v["attestation"]["x509"]["clientCertificates"];
            for which in ["primary", "secondary"] {
                if let Some(tp) = certs[which]["info"]["sha1Thumbprint"].as_str() {
                    disabled_by_tp
                        .entry(tp.to_ascii_uppercase())
                        .or_default()
                        .push(v["registrationId"].as_str().unwrap_or_default().to_string());
                }
            }
        }
        let ids: Vec<String> = batch.iter().map(|r| r.registration_id.clone()).collect();
        let individuals = self.individual_many(&ids)?;
        let none = Vec::new();
        Ok(batch
            .iter()
            .zip(individuals)
            .map(|(req, individual)| {
                let tp = req
                    .chain
                    .first()
                    .map(|c| crate::pki::sha1_thumbprint(c))
                    .unwrap_or_default();
                let decision = registration::decide(
                    req,
                    &registration::Context {
                        disabled_holding_leaf: disabled_by_tp.get(&tp).unwrap_or(&none),
                        individual: individual.as_ref(),
                        groups: &groups,
                        now,
                    },
                );
                // A refusal because another client's certificate took the device's slot says
                // so, and what to do.
                let foreign = individual.iter().flat_map(|e| &e.foreign).next();
                let id = &req.registration_id;
                match (decision, foreign) {
                    (Decision::Rejected(reason), Some(f)) => Err(format!(
                        "{reason}: {}; {}",
                        f.describe(id),
                        ForeignCertificate::remedy(id)
                    )),
                    (Decision::Rejected(reason) | Decision::Disabled(reason), _) => Err(reason),
                    (
                        Decision::Individual { hub, reprovision, .. }
                        | Decision::Group { hub, reprovision, .. },
                        _,
                    ) => Ok(Assignment { hub, reprovision }),
                }
            })
            .collect())
    }

    fn registration(&self, registration_id: &str) -> Result<Option<RegistrationState>> {
        self.rt.block_on(self.registration_async(registration_id))
    }

    fn assigned_hubs(&self, ids: &[String]) -> Result<Vec<Option<String>>> {
        // An individual enrollment read carries its device's registration state; a device
        // whose enrollment was not read (or shows none) has its state read on its own.
        let known: Vec<Option<Option<String>>> = {
            let seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
            ids.iter()
                .map(|id| match seen.get(id) {
                    Some(Some(r)) if r.json["registrationState"].is_object() => {
                        Some(self.registration_of(id, &r.json["registrationState"]).hub)
                    }
                    _ => None,
                })
                .collect()
        };
        let unknown: Vec<String> = ids
            .iter()
            .zip(&known)
            .filter(|(_, k)| k.is_none())
            .map(|(id, _)| id.clone())
            .collect();
        let mut read = self.registration_many(&unknown)?.into_iter();
        Ok(known
            .into_iter()
            .map(|k| k.unwrap_or_else(|| read.next().flatten().and_then(|r| r.hub)))
            .collect())
    }

    fn registration_many(&self, ids: &[String]) -> Result<Vec<Option<RegistrationState>>> {
        self.rt
            .block_on(futures::future::join_all(
                ids.iter().map(|id| self.registration_async(id)),
            ))
            .into_iter()
            .collect()
    }

    fn carried_registrations(&self, ids: &[String]) -> Vec<Option<Option<RegistrationState>>> {
        let seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        ids.iter()
            .map(|id| match seen.get(id) {
                Some(Some(r)) => Some(
                    r.json["registrationState"]
                        .is_object()
                        .then(|| self.registration_of(id, &r.json["registrationState"])),
                ),
                _ => None,
            })
            .collect()
    }

    fn group_registration_many(&self, group: &str, ids: &[String]) -> Result<Vec<Option<RegistrationState>>> {
        if ids.len() < 2 {
            return self.registration_many(ids);
        }
        let listed = self.rt.block_on(self.group_registrations(group))?;
        // A device the group's listing lacks registered elsewhere or never. Elsewhere is an
        // individual enrollment of its own (DPS prefers one to any group): a device whose read
        // in this process found none never registered; any other is read on its own.
        let without_enrollment: Vec<bool> = {
            let seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
            ids.iter().map(|id| matches!(seen.get(id), Some(None))).collect()
        };
        let unknown: Vec<String> = ids
            .iter()
            .zip(&without_enrollment)
            .filter(|(id, none)| !listed.contains_key(*id) && !**none)
            .map(|(id, _)| id.clone())
            .collect();
        let mut read = self.registration_many(&unknown)?.into_iter();
        Ok(ids
            .iter()
            .zip(without_enrollment)
            .map(|(id, none)| match listed.get(id) {
                Some(v) => Some(self.registration_of(id, v)),
                None if none => None,
                None => read.next().flatten(),
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reprovision_policies_round_trip_through_dps_flags() {
        for p in ["migrate", "reset", "never"] {
            assert_eq!(
                reprovision_of(&json!({"reprovisionPolicy": reprovision_json(p)})),
                p
            );
        }
        assert_eq!(reprovision_of(&json!({})), "migrate", "DPS's default");
    }

    /// Another client's certificate in a slot DPS holds: kept by a write that read it and
    /// leaves its slot empty, replaced only by a take-back that read it, refused otherwise (a
    /// write that never read it, as after a 412 re-read, or one putting its own certificate
    /// over it).
    #[test]
    fn a_write_keeps_or_takes_back_a_foreign_certificate_and_never_drops_it_unread() {
        let base = json!({"attestation": {"x509": {"clientCertificates": {
            "primary": {"info": {"sha1Thumbprint": "ab12", "subjectName": "CN=d"}},
            "secondary": {"info": {"sha1Thumbprint": "CD34"}}}}}});
        let ours = vec![1u8, 2, 3];
        let ours_tp = crate::pki::sha1_thumbprint(&ours);
        let known = |tp: &str| tp == "CD34";
        let read = ForeignCertificate {
            slot: "primary",
            thumbprint: "AB12".into(),
            subject: "CN=d".into(),
            not_before: None,
            not_after: None,
        };
        let mut e = IndividualEnrollment {
            registration_id: "d".into(),
            primary: None,
            secondary: None,
            status: Status::Disabled,
            reprovision: "never".into(),
            hub: "h".into(),
            foreign: vec![],
            take_back: false,
        };
        let refused = foreign_kept(&e, &base, &known).unwrap_err().to_string();
        assert!(
            refused.contains("AB12") && refused.contains("not overwritten"),
            "{refused}"
        );
        assert!(refused.contains("--breach enrollment:d"), "{refused}");
        e.foreign = vec![read];
        let [kept, none] = foreign_kept(&e, &base, &known).unwrap();
        assert_eq!(
            kept,
            Some(base["attestation"]["x509"]["clientCertificates"]["primary"].clone())
        );
        assert_eq!(none, None, "a known certificate is certroll's to write");
        e.primary = Some(ours.clone());
        assert!(
            foreign_kept(&e, &base, &known).is_err(),
            "its own certificate over it"
        );
        e.take_back = true;
        assert_eq!(foreign_kept(&e, &base, &known).unwrap(), [None, None]);
        let newer = json!({"attestation": {"x509": {"clientCertificates": {
            "primary": {"info": {"sha1Thumbprint": "EF56"}}}}}});
        assert!(
            foreign_kept(&e, &newer, &known).is_err(),
            "a take-back takes only what it read"
        );
        let own = json!({"attestation": {"x509": {"clientCertificates": {
            "primary": {"info": {"sha1Thumbprint": ours_tp}}}}}});
        assert_eq!(foreign_kept(&e, &own, &|_| false).unwrap(), [None, None]);
    }

    #[test]
    fn a_record_read_goes_back_without_what_dps_computes() {
        let read = json!({"registrationId": "a", "etag": "\"x\"", "initialTwin": {"tags": {"k": 1}},
            "registrationState": {}, "createdDateTimeUtc": "t", "lastUpdatedDateTimeUtc": "t"});
        let w = writable(read);
        assert_eq!(
            w,
            json!({"registrationId": "a", "initialTwin": {"tags": {"k": 1}}})
        );
    }
}
