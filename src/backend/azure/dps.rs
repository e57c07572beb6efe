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
use super::wire::{Fields, Kept, Text};
use super::{SetupError, client_options, http_client, runtime};
use crate::backend::registration::{self, Decision};
use crate::backend::types::*;
use crate::backend::{BackendError, EnrollmentService, Result};
use crate::plan::AzureConfig;
use azure_core::credentials::TokenCredential;
use azure_core::http::Method;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
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
    /// Shared with the scan's page fetched ahead, which runs on `rt` by itself.
    dps: Arc<RestClient>,
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
    seen: Mutex<HashMap<String, Option<Enrollment>>>,
    /// The scan of every individual enrollment, read as far as reads of many ids needed it.
    scan: tokio::sync::Mutex<Scan>,
    source: Option<Box<dyn CertificateSource>>,
    /// The individual enrollments whose last write by this process kept them disabled, as
    /// another client of DPS had set them, where certroll wrote them enabled (see
    /// [`EnrollmentService::individuals_kept_disabled`]).
    kept_disabled: Mutex<std::collections::HashSet<String>>,
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
    records: HashMap<String, Enrollment>,
    /// The token of the next page (None before the first page and after the last).
    continuation: Option<String>,
    /// The fetch of the answer for `continuation`, started when the page before it was read
    /// and left running on the client's runtime when that read returned: the service renders
    /// the next page while certroll parses this one and while the caller writes what it read
    /// (a roll's chunk goes to DPS and the hub before the next chunk is read), rather than
    /// each waiting for the other. At most one page ahead of what reads asked for; None in
    /// its result when it failed (it is fetched again when needed, and fails then).
    ahead: Option<tokio::task::JoinHandle<Option<super::rest::Answer>>>,
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

/// A record as DPS holds it, as a tree: the full JSON and its etag (enrollment groups, which
/// are few).
struct Record {
    json: Value,
    etag: String,
}

fn record(json: Value) -> Record {
    let etag = json["etag"].as_str().unwrap_or("*").to_string();
    Record { json, etag }
}

impl<'de> Deserialize<'de> for Record {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        Value::deserialize(d).map(record)
    }
}

/// A record read from DPS that a write can be built on.
trait Stored: for<'de> Deserialize<'de> {
    /// The etag it was read with (`*` when DPS gave none).
    fn etag(&self) -> &str;
}

impl Stored for Record {
    fn etag(&self) -> &str {
        &self.etag
    }
}

/// An individual enrollment as DPS answered it, reduced to what certroll reads and what a
/// write must send back: a handful of strings, not a JSON tree (a roll holds every record of
/// the fleet between its read and its write; see [`wire`](super::wire)).
#[derive(Debug)]
struct Enrollment {
    registration_id: Option<String>,
    etag: String,
    primary: Option<SlotRead>,
    secondary: Option<SlotRead>,
    status: Status,
    reprovision: &'static str,
    /// The hub's host name: `iotHubs`' first, else the legacy `iotHubHostName`.
    hub_host: Option<String>,
    /// The device's `DeviceRegistrationState`, unparsed (most reads never look at it).
    registration_state: Option<Box<RawValue>>,
    /// Whether `kept` holds a `deviceId` (else a write sends the registration id).
    has_device_id: bool,
    /// The members certroll does not manage (`deviceId`, `capabilities`, `initialTwin`, ...),
    /// sent back unchanged by a write.
    kept: Kept,
}

impl Enrollment {
    /// The device's registration state this read carried (None: the device never registered,
    /// or DPS sent none).
    fn registration(&self) -> Option<RegistrationWire> {
        let raw = self.registration_state.as_deref()?;
        serde_json::from_str(raw.get()).ok()
    }
}

impl Stored for Enrollment {
    fn etag(&self) -> &str {
        &self.etag
    }
}

/// An `X509CertificateWithInfo` as read: the certificate when the service echoes it (DPS does
/// not), else what its `info` names. The `info` stays unparsed: it is read once, by
/// [`AzureEnrollmentService::resolve`], and a slot holding another client's certificate goes
/// back to DPS as it was read.
#[derive(Debug, Default, Deserialize)]
struct SlotRead {
    #[serde(default)]
    certificate: Option<String>,
    #[serde(default)]
    info: Option<Box<RawValue>>,
}

/// An `X509CertificateInfo`: what certroll reads of it.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct InfoRead {
    #[serde(default)]
    sha1_thumbprint: Option<String>,
    #[serde(default)]
    subject_name: Option<String>,
    #[serde(default)]
    issuer_name: Option<String>,
    #[serde(default)]
    not_before_utc: Option<String>,
    #[serde(default)]
    not_after_utc: Option<String>,
}

impl SlotRead {
    /// The slot of a record read as a tree (enrollment groups).
    fn of_json(v: &Value) -> Option<SlotRead> {
        if v.is_null() {
            return None;
        }
        Some(SlotRead {
            certificate: v["certificate"].as_str().map(str::to_string),
            info: serde_json::value::to_raw_value(&v["info"]).ok(),
        })
    }

    /// Its `info`, parsed (None when DPS sent none or it is not an object).
    fn info(&self) -> Option<InfoRead> {
        serde_json::from_str(self.info.as_deref()?.get()).ok()
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct AttestationRead {
    #[serde(default)]
    x509: Option<X509Read>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct X509Read {
    #[serde(default)]
    client_certificates: Option<ClientCertificatesRead>,
}

#[derive(Deserialize)]
struct ClientCertificatesRead {
    #[serde(default)]
    primary: Option<SlotRead>,
    #[serde(default)]
    secondary: Option<SlotRead>,
}

/// `reprovisionPolicy` as DPS spells it (both flags default to true).
#[derive(Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
struct ReprovisionWire {
    #[serde(default)]
    update_hub_assignment: Option<bool>,
    #[serde(default)]
    migrate_device_data: Option<bool>,
}

impl ReprovisionWire {
    fn of(policy: &str) -> ReprovisionWire {
        let (update, migrate) = match policy {
            "reset" => (true, false),
            "never" => (false, true),
            _ => (true, true),
        };
        ReprovisionWire {
            update_hub_assignment: Some(update),
            migrate_device_data: Some(migrate),
        }
    }

    fn policy(p: Option<&ReprovisionWire>) -> &'static str {
        match p {
            Some(p) if p.update_hub_assignment == Some(false) => "never",
            Some(p) if p.migrate_device_data == Some(false) => "reset",
            _ => "migrate",
        }
    }
}

impl<'de> Deserialize<'de> for Enrollment {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = Enrollment;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("an individual enrollment (a JSON object)")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> std::result::Result<Enrollment, A::Error> {
                let mut e = Enrollment {
                    registration_id: None,
                    etag: "*".into(),
                    primary: None,
                    secondary: None,
                    status: Status::Enabled,
                    reprovision: "migrate",
                    hub_host: None,
                    registration_state: None,
                    has_device_id: false,
                    kept: Kept::default(),
                };
                let (mut hubs, mut host_name) = (None, None);
                let mut kept = Fields::default();
                while let Some(key) = map.next_key::<Text<'de>>()? {
                    match &*key {
                        "registrationId" => e.registration_id = map.next_value()?,
                        "etag" => {
                            if let Some(etag) = map.next_value::<Option<String>>()? {
                                e.etag = etag;
                            }
                        }
                        "attestation" => {
                            let a: Option<AttestationRead> = map.next_value()?;
                            if let Some(certs) = a.and_then(|a| a.x509?.client_certificates) {
                                e.primary = certs.primary;
                                e.secondary = certs.secondary;
                            }
                        }
                        "provisioningStatus" => {
                            if let Some(s) = map.next_value::<Option<Text<'de>>>()? {
                                e.status = Status::parse(&s);
                            }
                        }
                        "reprovisionPolicy" => {
                            e.reprovision = ReprovisionWire::policy(
                                map.next_value::<Option<ReprovisionWire>>()?.as_ref(),
                            );
                        }
                        "iotHubs" => hubs = map.next_value::<Option<Vec<Text<'de>>>>()?,
                        "iotHubHostName" => host_name = map.next_value::<Option<String>>()?,
                        "registrationState" => {
                            e.registration_state =
                                map.next_value::<Option<&'de RawValue>>()?.map(ToOwned::to_owned);
                        }
                        // DPS's own (read-only, or replaced by every write).
                        "createdDateTimeUtc" | "lastUpdatedDateTimeUtc" | "allocationPolicy" => {
                            map.next_value::<serde::de::IgnoredAny>()?;
                        }
                        _ => {
                            let value: &'de RawValue = map.next_value()?;
                            if &*key == "deviceId" {
                                if value.get() == "null" {
                                    continue;
                                }
                                e.has_device_id = true;
                            }
                            kept.0.push((key, value));
                        }
                    }
                }
                e.hub_host = hubs
                    .and_then(|h| h.into_iter().next())
                    .map(|h| h.0.into_owned())
                    .or(host_name);
                e.kept = Kept::new(&kept);
                Ok(e)
            }
        }
        d.deserialize_map(V)
    }
}

/// The certificate of an enrollment slot as certroll sends it: base64 of the DER bytes (which
/// DPS takes as it takes PEM text, and which needs no line breaks escaped).
fn certificate_text(der: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(der)
}

/// The certificates of `e`'s slots as [`certificate_text`], computed once for every try.
fn certificates_of(e: &IndividualEnrollment) -> [Option<String>; 2] {
    [&e.primary, &e.secondary].map(|d| d.as_deref().map(certificate_text))
}

/// A certificate's DER from the text an `X509CertificateWithInfo` may hold: PEM text or base64
/// of the DER bytes.
fn certificate_der(text: &str) -> Option<Vec<u8>> {
    if crate::pki::pem::is_pem(text.as_bytes()) {
        return crate::pki::pem::certs_from_pem(text.as_bytes())
            .ok()?
            .into_iter()
            .next();
    }
    use base64::Engine as _;
    let compact: String = text.chars().filter(|c| !c.is_whitespace()).collect();
    base64::engine::general_purpose::STANDARD.decode(compact).ok()
}

/// A body certroll builds, as JSON bytes.
fn to_json(body: &impl Serialize) -> Result<Vec<u8>> {
    serde_json::to_vec(body)
        .map_err(|e| BackendError::Refused(format!("a request body could not be written: {e}")))
}

/// What a write of an individual enrollment sends: certroll's fields of `e` over what was
/// kept from its read (`read`), with the etag in the body for a bulk `updateIfMatchETag`.
struct IndividualBody<'a> {
    e: &'a IndividualEnrollment,
    hub_host: &'a str,
    /// The primary and secondary certificates, as [`certificate_text`].
    certificates: &'a [Option<String>; 2],
    read: Option<&'a Enrollment>,
    /// The slots of `read` that hold another client's certificate this write keeps
    /// ([`foreign_kept`]), sent where certroll's certificate is none.
    kept: [Option<&'a SlotRead>; 2],
    etag: Option<&'a str>,
}

#[derive(Serialize)]
struct AttestationWrite<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    x509: X509Write<'a>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct X509Write<'a> {
    client_certificates: SlotsWrite<'a>,
}

#[derive(Serialize)]
struct SlotsWrite<'a> {
    primary: Option<CertificateWrite<'a>>,
    secondary: Option<CertificateWrite<'a>>,
}

/// A slot as written: certroll's certificate, or another client's slot kept as it was read
/// (its `info`, which DPS takes as "unchanged").
#[derive(Serialize)]
struct CertificateWrite<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    certificate: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    info: Option<&'a RawValue>,
}

impl Serialize for IndividualBody<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let e = self.e;
        let mut m = s.serialize_map(None)?;
        m.serialize_entry("registrationId", &e.registration_id)?;
        if let Some(read) = self.read {
            read.kept.write_into(&mut m, &|_| false)?;
        }
        if !self.read.is_some_and(|r| r.has_device_id) {
            m.serialize_entry("deviceId", &e.registration_id)?;
        }
        fn slot<'a>(c: &'a Option<String>, kept: Option<&'a SlotRead>) -> Option<CertificateWrite<'a>> {
            match (c.as_deref(), kept) {
                (Some(certificate), _) => Some(CertificateWrite {
                    certificate: Some(certificate),
                    info: None,
                }),
                // The certificate info DPS sent for a slot kept (another client's) goes back
                // as read: DPS keeps a slot whose certificate is unchanged.
                (None, Some(k)) => Some(CertificateWrite {
                    certificate: k.certificate.as_deref(),
                    info: k.info.as_deref(),
                }),
                (None, None) => None,
            }
        }
        let [primary, secondary] = self.certificates;
        let [kept_primary, kept_secondary] = self.kept;
        m.serialize_entry(
            "attestation",
            &AttestationWrite {
                kind: "x509",
                x509: X509Write {
                    client_certificates: SlotsWrite {
                        primary: slot(primary, kept_primary),
                        secondary: slot(secondary, kept_secondary),
                    },
                },
            },
        )?;
        let status = super::kept_status(e.status, self.read.map(|r| r.status));
        m.serialize_entry("provisioningStatus", status.as_str())?;
        m.serialize_entry("reprovisionPolicy", &ReprovisionWire::of(&e.reprovision))?;
        m.serialize_entry("iotHubs", &[self.hub_host])?;
        m.serialize_entry("allocationPolicy", "static")?;
        if let Some(etag) = self.etag {
            m.serialize_entry("etag", etag)?;
        }
        m.end()
    }
}

/// A DPS bulk operation's body.
#[derive(Serialize)]
struct BulkBody<'a> {
    mode: &'a str,
    enrollments: &'a [IndividualBody<'a>],
}

/// A `DeviceRegistrationState` as DPS answers it (service API view).
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
struct RegistrationWire {
    #[serde(default)]
    registration_id: Option<String>,
    #[serde(default)]
    status: Option<String>,
    #[serde(default)]
    substatus: Option<String>,
    #[serde(default)]
    assigned_hub: Option<String>,
    #[serde(default)]
    error_message: Option<String>,
    #[serde(default)]
    error_code: Option<i64>,
    #[serde(default)]
    created_date_time_utc: Option<String>,
    #[serde(default)]
    last_updated_date_time_utc: Option<String>,
    #[serde(default)]
    etag: Option<String>,
}

/// The reprovision policy of a group read as a tree.
fn reprovision_of(v: &Value) -> &'static str {
    let p = serde_json::from_value::<ReprovisionWire>(v["reprovisionPolicy"].clone()).ok();
    ReprovisionWire::policy(p.as_ref())
}

fn parse_time(v: Option<&str>) -> Option<OffsetDateTime> {
    OffsetDateTime::parse(v?, &time::format_description::well_known::Rfc3339).ok()
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

/// Which slots of what DPS holds now (`held`, `[primary, secondary]`) hold a certificate
/// another client put there that a write keeps as it is: one that is neither certroll's
/// (`ours`: the write's own thumbprints, or one `known` tells certroll issued) nor empty. The
/// writer read it (it is in `read`) and takes it back (`take_back`): dropped. It read it and
/// leaves that slot empty (`mine` false there), and `keeps` (given the slot's name) finds no
/// reason against keeping it: kept. Any other is refused (`refused`: the certificate, why),
/// so a write never drops or replaces a foreign certificate unread. What DPS holds may be newer
/// than what the writer read (a re-read after 412): its slots are judged here, by thumbprint.
#[allow(clippy::too_many_arguments)]
fn foreign_slots(
    held: [Option<&SlotRead>; 2],
    mine: [bool; 2],
    ours: &[String],
    known: &dyn Fn(&str) -> bool,
    read: &[ForeignCertificate],
    take_back: bool,
    keeps: &dyn Fn(&'static str) -> Option<&'static str>,
    refused: &dyn Fn(ForeignCertificate, &str) -> BackendError,
) -> Result<[bool; 2]> {
    let mut kept = [false, false];
    for (((which, slot), mine), keep) in ["primary", "secondary"]
        .into_iter()
        .zip(held)
        .zip(mine)
        .zip(kept.iter_mut())
    {
        let Some(slot) = slot else {
            continue;
        };
        let info = slot.info().unwrap_or_default();
        let Some(tp) = info.sha1_thumbprint.as_deref().map(str::to_ascii_uppercase) else {
            continue;
        };
        if ours.contains(&tp) || known(&tp) {
            continue;
        }
        let was_read = read.iter().any(|f| f.thumbprint == tp);
        if was_read && take_back {
            continue;
        }
        let f = ForeignCertificate {
            slot: which,
            thumbprint: tp,
            subject: info.subject_name.unwrap_or_default(),
            issuer: info.issuer_name.unwrap_or_default(),
            not_before: None,
            not_after: None,
        };
        if !was_read || mine {
            return Err(refused(f, "it was not overwritten"));
        }
        if let Some(why) = keeps(which) {
            return Err(refused(f, why));
        }
        *keep = true;
    }
    Ok(kept)
}

/// The slots of `base` (what DPS holds now) that hold a certificate another client put
/// there, which a write of `e` keeps as they are (`[primary, secondary]`): `e` read it (it
/// is in [`IndividualEnrollment::foreign`]) and leaves that slot empty, as a revoke that
/// only disables the enrollment does. A write that would drop or replace one is refused,
/// unless `e` takes it back ([`IndividualEnrollment::take_back`]); see [`foreign_slots`].
fn foreign_kept<'r>(
    e: &IndividualEnrollment,
    base: Option<&'r Enrollment>,
    known: &dyn Fn(&str) -> bool,
) -> Result<[Option<&'r SlotRead>; 2]> {
    let Some(base) = base else {
        return Ok([None, None]);
    };
    let ours: Vec<String> = [&e.primary, &e.secondary]
        .into_iter()
        .flatten()
        .map(|d| crate::pki::sha1_thumbprint(d))
        .collect();
    let held = [base.primary.as_ref(), base.secondary.as_ref()];
    let kept = foreign_slots(
        held,
        [e.primary.is_some(), e.secondary.is_some()],
        &ours,
        known,
        &e.foreign,
        e.take_back,
        &|_| None,
        &|f, why| {
            BackendError::Refused(format!(
                "{}; {why}: {}",
                f.describe(&e.registration_id),
                ForeignCertificate::remedy(&e.registration_id)
            ))
        },
    )?;
    Ok([0, 1].map(|i| held[i].filter(|_| kept[i])))
}

/// The signing slots of `base` (the enrollment group as DPS holds it now, a tree) that hold
/// a CA certificate another client put there, which a write of `g` keeps as read
/// (`[primary, secondary]`, each `{"info": ...}`): `g` read it (it is in
/// [`EnrollmentGroup::foreign`]) and leaves that slot `None`. A write that would replace or
/// drop one is refused unless `g` takes the group back ([`EnrollmentGroup::take_back`]), as
/// is one that would leave the primary slot empty beside it (DPS requires a primary) or refer
/// to a CA by name beside it; see [`foreign_slots`].
fn group_kept(
    g: &EnrollmentGroup,
    base: Option<&Value>,
    known: &dyn Fn(&str) -> bool,
) -> Result<[Option<Value>; 2]> {
    let Some(base) = base else {
        return Ok([None, None]);
    };
    let signing = &base["attestation"]["x509"]["signingCertificates"];
    let ours: Vec<String> = [&g.primary, &g.secondary]
        .into_iter()
        .flatten()
        .map(|s| crate::pki::sha1_thumbprint(&s.cert_der))
        .collect();
    let referenced = [&g.primary, &g.secondary]
        .into_iter()
        .flatten()
        .any(|s| s.ca_reference.is_some());
    let names = ["primary", "secondary"];
    let held = names.map(|which| SlotRead::of_json(&signing[which]));
    let kept = foreign_slots(
        [held[0].as_ref(), held[1].as_ref()],
        [g.primary.is_some(), g.secondary.is_some()],
        &ours,
        known,
        &g.foreign,
        g.take_back,
        &|which| {
            if referenced {
                Some(
                    "a group refers to its CA by name or holds its signing certificates, not both, so it was not changed",
                )
            } else if which == "secondary" && g.primary.is_none() {
                Some(
                    "the write would leave the primary slot empty beside it (DPS requires a primary), so it was not changed",
                )
            } else {
                None
            }
        },
        &|f, why| {
            BackendError::Refused(format!(
                "{}; {why}: {}",
                f.describe_in_group(&g.name),
                ForeignCertificate::group_remedy(&g.name, None)
            ))
        },
    )?;
    Ok([0, 1].map(|i| kept[i].then(|| json!({"info": signing[names[i]]["info"]}))))
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
            client_options(http.clone(), config),
            SasPolicy::new(&dps.host, key),
            dps.limits,
        )?;
        let arm = dps
            .resource_id
            .as_deref()
            .map(|id| ArmCertificates::new(id, client_options(http.clone(), config), credential, dps.limits))
            .transpose()?;
        let hub_hosts: BTreeMap<String, String> = config
            .hubs
            .iter()
            .map(|(name, hub)| (name.clone(), hub.host.to_ascii_lowercase()))
            .collect();
        let hub_names = hub_hosts.iter().map(|(n, h)| (h.clone(), n.clone())).collect();
        Ok(AzureEnrollmentService {
            rt: runtime()?,
            dps: Arc::new(client),
            arm,
            hub_names,
            hub_hosts,
            known: Mutex::new(HashMap::new()),
            seen: Mutex::new(HashMap::new()),
            kept_disabled: Mutex::new(std::collections::HashSet::new()),
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
    fn keep(&self, id: &str, read: Option<Enrollment>) {
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

    /// What a slot (`which`: `primary` or `secondary`) of `whose` holds: nothing, a certificate
    /// certroll knows (from the record, its reads and writes, or the vault), or one it cannot
    /// resolve, described from DPS's `info`.
    fn resolve(&self, slot: Option<&SlotRead>, whose: &str, which: &'static str) -> Result<Held> {
        let Some(slot) = slot else {
            return Ok(Held::Empty);
        };
        if let Some(text) = slot.certificate.as_deref()
            && let Some(der) = certificate_der(text)
        {
            return Ok(Held::Known(der));
        }
        let info = slot.info().unwrap_or_default();
        let Some(tp) = info.sha1_thumbprint.as_deref().map(str::to_ascii_uppercase) else {
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
            subject: info.subject_name.unwrap_or_default(),
            issuer: info.issuer_name.unwrap_or_default(),
            not_before: parse_time(info.not_before_utc.as_deref()),
            not_after: parse_time(info.not_after_utc.as_deref()),
        }))
    }

    /// [`foreign_kept`] with the certificates this process resolved or wrote as the known ones.
    fn foreign_kept<'r>(
        &self,
        e: &IndividualEnrollment,
        base: Option<&'r Enrollment>,
    ) -> Result<[Option<&'r SlotRead>; 2]> {
        let known = self.known.lock().unwrap_or_else(|p| p.into_inner());
        foreign_kept(e, base, &|tp| known.contains_key(tp))
    }

    /// The plan's name of the hub at `host` (its first label when the plan has none).
    fn hub_name_of(&self, host: Option<&str>) -> String {
        let host = host.unwrap_or_default().to_ascii_lowercase();
        self.hub_names
            .get(&host)
            .cloned()
            .unwrap_or_else(|| host.split('.').next().unwrap_or_default().to_string())
    }

    fn hub_name(&self, v: &Value) -> String {
        self.hub_name_of(
            v["iotHubs"]
                .as_array()
                .and_then(|h| h.first())
                .and_then(Value::as_str)
                .or_else(|| v["iotHubHostName"].as_str())
                .or_else(|| v["assignedHub"].as_str()),
        )
    }

    fn hub_host(&self, hub: &str) -> Result<&str> {
        self.hub_hosts
            .get(hub)
            .map(String::as_str)
            .ok_or_else(|| BackendError::Refused(format!("hub `{hub}` is not in the plan's [backend.hubs]")))
    }

    fn individual_of(&self, e: &Enrollment) -> Result<IndividualEnrollment> {
        let id = e.registration_id.clone().unwrap_or_default();
        // A certificate another client put into a slot is reported with the enrollment, not
        // an error for the whole read: one such enrollment must not blind a fleet's status.
        let mut foreign = Vec::new();
        let mut slots = [None, None];
        for ((slot, read), which) in slots
            .iter_mut()
            .zip([&e.primary, &e.secondary])
            .zip(["primary", "secondary"])
        {
            match self.resolve(read.as_ref(), &id, which)? {
                Held::Empty => {}
                Held::Known(der) => *slot = Some(der),
                Held::Foreign(f) => foreign.push(f),
            }
        }
        let [primary, secondary] = slots;
        Ok(IndividualEnrollment {
            primary,
            secondary,
            status: e.status,
            reprovision: e.reprovision.to_string(),
            hub: self.hub_name_of(e.hub_host.as_deref()),
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
        // A CA certificate another client put into a signing slot is reported with the group,
        // not an error for every verb that reads it.
        let mut foreign = Vec::new();
        for (i, which) in ["primary", "secondary"].into_iter().enumerate() {
            if let Some(reference) = x509["caReferences"][which].as_str() {
                let ca = cas(reference)?
                    .ok_or_else(|| BackendError::NotFound(format!("CA certificate `{reference}`")))?;
                slots[i] = Some(Slot {
                    cert_der: ca.cert_der,
                    ca_reference: Some(reference.to_string()),
                });
                continue;
            }
            match self.resolve(
                SlotRead::of_json(&x509["signingCertificates"][which]).as_ref(),
                &name,
                which,
            )? {
                Held::Empty => {}
                Held::Known(der) => {
                    slots[i] = Some(Slot {
                        cert_der: der,
                        ca_reference: None,
                    })
                }
                Held::Foreign(f) => foreign.push(f),
            }
        }
        let [primary, secondary] = slots;
        Ok(EnrollmentGroup {
            primary,
            secondary,
            status: Status::parse(v["provisioningStatus"].as_str().unwrap_or("enabled")),
            reprovision: reprovision_of(v).to_string(),
            hub: self.hub_name(v),
            name,
            foreign,
            take_back: false,
        })
    }

    /// The record a write of `g` sends: certroll's fields over what was read (`base`), with
    /// the signing slots of another client's certificates that [`group_kept`] keeps.
    fn group_json(&self, g: &EnrollmentGroup, base: Option<&Value>) -> Result<Value> {
        let kept = {
            let known = self.known.lock().unwrap_or_else(|p| p.into_inner());
            group_kept(g, base, &|tp| known.contains_key(tp))?
        };
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
            let slot = |s: &Option<Slot>, kept: &Option<Value>| match s {
                Some(s) => json!({"certificate": certificate_text(&s.cert_der)}),
                // Another client's certificate goes back as DPS gave it: its info, which DPS
                // takes as "this slot unchanged".
                None => kept.clone().unwrap_or(Value::Null),
            };
            json!({"signingCertificates": {
                "primary": slot(&g.primary, &kept[0]),
                "secondary": slot(&g.secondary, &kept[1]),
            }})
        };
        out["attestation"] = json!({"type": "x509", "x509": x509});
        let held = base
            .and_then(|b| b["provisioningStatus"].as_str())
            .map(Status::parse);
        out["provisioningStatus"] = json!(super::kept_status(g.status, held).as_str());
        out["reprovisionPolicy"] = json!(ReprovisionWire::of(&g.reprovision));
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

    /// `collection` is `enrollments` (read as [`Enrollment`]) or `enrollmentGroups` ([`Record`]).
    async fn read<T: Stored>(&self, collection: &str, id: &str, what: &str) -> Result<Option<T>> {
        let operation = format!("get {what}");
        let call = Call::new(
            Method::Get,
            format!("/{collection}/{}", segment(id)),
            &operation,
            id,
        );
        let answer = self.dps.expect(&call, &[200, 404]).await?;
        if answer.status == 404 {
            return Ok(None);
        }
        answer
            .typed()
            .map(Some)
            .map_err(|e| self.dps.unreadable(&call, &answer, &e))
    }

    /// Every record of a query, page by page (`x-ms-continuation`).
    async fn query<T: for<'de> Deserialize<'de>>(&self, collection: &str, what: &str) -> Result<Vec<T>> {
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
            if !answer.body.trim_ascii_start().starts_with(b"[") {
                return Err(self.dps.error(&call, &answer));
            }
            let items: Vec<T> = answer
                .typed()
                .map_err(|e| self.dps.unreadable(&call, &answer, &e))?;
            out.extend(items);
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
    async fn read_individuals(&self, ids: &[String]) -> Result<Vec<Option<Enrollment>>> {
        let mut out: Vec<Option<Option<Enrollment>>> = (0..ids.len()).map(|_| None).collect();
        {
            let mut scan = self.scan.lock().await;
            let eligible = ids.iter().filter(|id| !scan.taken.contains(*id)).count();
            // A few ids are worth the scan's first page: a DPS whose enrollments fit on it (most
            // fleets) answers them all, those present and those absent (the devices of a
            // group, which have none), in one request. Past that page a few are read by GET.
            // A finished scan answers any number for free: what it did not find is absent
            // (trial az14 F1: a roll's later small groups cost DPS a 404 GET per device).
            let small = eligible < SCAN_FROM;
            if eligible >= SCAN_FROM || (eligible >= 2 && !scan.started) || (scan.done && eligible > 0) {
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
        // Only what the scan did not settle costs a future (a roll's page of a thousand is
        // usually settled whole).
        let unsettled: Vec<usize> = (0..ids.len()).filter(|&i| out[i].is_none()).collect();
        let reads = futures::future::join_all(
            unsettled
                .iter()
                .map(|&i| self.read::<Enrollment>("enrollments", &ids[i], "enrollment")),
        )
        .await;
        for (i, read) in unsettled.into_iter().zip(reads) {
            out[i] = Some(read?);
        }
        Ok(out.into_iter().map(Option::flatten).collect())
    }

    /// One page of the query of every enrollment, from `continuation` (None: the first).
    async fn query_page(dps: &RestClient, continuation: Option<&str>) -> Result<super::rest::Answer> {
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
        let answer = dps.expect(&call, &[200]).await?;
        if !answer.body.trim_ascii_start().starts_with(b"[") {
            return Err(dps.error(&call, &answer));
        }
        Ok(answer)
    }

    /// Reads the scan's next page into it, and starts the fetch of the page after it (see
    /// `Scan::ahead`). A page that cannot be read leaves the scan where it was.
    async fn scan_page(&self, scan: &mut Scan) -> Result<()> {
        let fetched = match scan.ahead.take() {
            Some(fetch) => fetch.await.ok().flatten(),
            None => None,
        };
        let answer = match fetched {
            Some(answer) => answer,
            None => Self::query_page(&self.dps, scan.continuation.as_deref()).await?,
        };
        let next = answer
            .header("x-ms-continuation")
            .filter(|t| !t.is_empty())
            .map(str::to_string);
        // Out before this page is parsed, on the runtime's workers.
        let ahead = next.clone().map(|token| {
            let dps = self.dps.clone();
            self.rt
                .spawn(async move { Self::query_page(&dps, Some(&token)).await.ok() })
        });
        let items: std::result::Result<Vec<Enrollment>, _> = answer.typed();
        let items = match items {
            Ok(items) => items,
            Err(e) => {
                if let Some(fetch) = ahead {
                    fetch.abort();
                }
                let call = Call::new(
                    Method::Post,
                    "/enrollments/query".into(),
                    "query enrollments",
                    "*",
                );
                return Err(self.dps.unreadable(&call, &answer, &e));
            }
        };
        let taken = &scan.taken;
        let read: Vec<(String, Enrollment)> = items
            .into_iter()
            .filter_map(|item| {
                let id = item.registration_id.clone()?;
                (!taken.contains(&id)).then_some((id, item))
            })
            .collect();
        scan.records.extend(read);
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
    async fn put_one<T: Stored>(
        &self,
        collection: &str,
        id: &str,
        what: &str,
        mut current: Option<Option<T>>,
        build: &(dyn Fn(Option<&T>) -> Result<Vec<u8>> + Sync),
    ) -> Result<()> {
        let operation = format!("put {what}");
        let mut tries = 0;
        loop {
            let existing = match current.take() {
                Some(c) => c,
                None => self.read(collection, id, what).await?,
            };
            let body = build(existing.as_ref())?;
            let mut call = Call::new(
                Method::Put,
                format!("/{collection}/{}", segment(id)),
                &operation,
                id,
            )
            .json_bytes(body);
            if let Some(r) = &existing {
                call = call.header("if-match", if_match(r.etag()));
            }
            let answer = self.dps.send(&call).await?;
            match answer.status {
                200 | 201 => return Ok(()),
                409 | 412 if tries < MAX_PRECONDITION_RETRIES => tries += 1,
                409 | 412 => return Err(self.dps.kept_changing(&call, &answer, tries)),
                _ => return Err(self.dps.error(&call, &answer)),
            }
        }
    }

    /// One bulk operation of at most [`BULK_LIMIT`] individual enrollments; returns the ids
    /// that lost a race (409 on create, 412 on update), to be written one by one.
    async fn bulk(&self, mode: &str, items: &[IndividualBody<'_>]) -> Result<Vec<String>> {
        let first = items
            .first()
            .map(|b| b.e.registration_id.as_str())
            .unwrap_or_default();
        let target = format!("{} enrollments from `{first}`", items.len());
        let operation = format!("bulk {mode} enrollments");
        // Two certificates of about 1 KiB each in base64, and the rest of the record.
        let size = items.len() * 3072;
        let call = Call::new(Method::Post, "/enrollments".into(), &operation, &target).json_sized(
            BulkBody {
                mode,
                enrollments: items,
            },
            size,
        );
        let answer = self.dps.expect(&call, &[200]).await?;
        let result: super::wire::BulkResult = answer
            .typed()
            .map_err(|e| self.dps.unreadable(&call, &answer, &e))?;
        if result.is_successful == Some(true) {
            return Ok(Vec::new());
        }
        let Some(errors) = result.errors else {
            return Err(self.dps.error(&call, &answer));
        };
        let mut raced = Vec::new();
        for e in errors {
            let id = e.registration_id.unwrap_or_default();
            let code = e.error_code.as_ref().map(|c| c.number()).unwrap_or_default();
            if matches!(code / 1000, 409 | 412) {
                raced.push(id);
            } else {
                return Err(BackendError::Remote {
                    service: "DPS",
                    operation,
                    target: id,
                    status: u16::try_from(code / 1000).ok(),
                    code: e.error_code.map(|c| c.text().into_owned()).unwrap_or_default(),
                    message: e.error_status.unwrap_or_default(),
                });
            }
        }
        Ok(raced)
    }

    async fn put_individuals_async(&self, batch: &[IndividualEnrollment]) -> Result<()> {
        let carried: Vec<Option<Option<Enrollment>>> = {
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
        // Nothing to read takes no lock on the scan, which a read of a later chunk may hold
        // meanwhile (`put_individuals_reading`).
        let mut fresh = if missing.is_empty() {
            Vec::new()
        } else {
            self.read_individuals(&missing).await?
        }
        .into_iter();
        self.written(batch.iter().map(|e| &e.registration_id)).await;
        let reads = carried
            .into_iter()
            .map(|c| c.unwrap_or_else(|| fresh.next().flatten()));
        // What could refuse a body is checked before any request goes out.
        for e in batch {
            self.hub_host(&e.hub)?;
        }
        let (mut creates, mut updates) = (Vec::new(), Vec::new());
        // The status each enrollment is written with: a status another client set is kept.
        let mut written: HashMap<&str, Status> = HashMap::with_capacity(batch.len());
        for (e, read) in batch.iter().zip(reads) {
            written.insert(
                &e.registration_id,
                super::kept_status(e.status, read.as_ref().map(|r| r.status)),
            );
            match read {
                None => creates.push((e, None)),
                Some(r) => updates.push((e, Some(r))),
            }
        }
        let stage = crate::progress::stage("DPS enrollments", batch.len() as u64);
        let stage = &stage;
        // Each request's body is built when it gets one of the client's slots, so the first
        // requests are out while the later ones are built and no more bodies are alive than
        // requests in flight; each is written once, straight into its request's buffer, from
        // the records read (never copied into a tree).
        let mut work = Vec::new();
        for (mode, items) in [("create", creates), ("updateIfMatchETag", updates)] {
            // Taken from the front by moving, not by splitting the rest off (a copy of the
            // whole tail for each chunk).
            let mut items = items.into_iter().peekable();
            while items.peek().is_some() {
                let chunk: Vec<_> = items.by_ref().take(BULK_LIMIT).collect();
                let n = chunk.len() as u64;
                work.push(async move {
                    let certificates: Vec<_> = chunk.iter().map(|(e, _)| certificates_of(e)).collect();
                    let mut bodies = Vec::with_capacity(chunk.len());
                    for ((e, read), certificates) in chunk.iter().zip(&certificates) {
                        let read = read.as_ref();
                        bodies.push(IndividualBody {
                            e,
                            hub_host: self.hub_host(&e.hub)?,
                            certificates,
                            read,
                            kept: self.foreign_kept(e, read)?,
                            etag: read.map(|r| r.etag.as_str()),
                        });
                    }
                    let raced = self.bulk(mode, &bodies).await;
                    stage.advance(n);
                    raced
                });
            }
        }
        use futures::StreamExt as _;
        let done: Vec<Result<Vec<String>>> = futures::stream::iter(work)
            .buffer_unordered(self.dps.concurrency())
            .collect()
            .await;
        let mut raced = std::collections::HashSet::new();
        for r in done {
            raced.extend(r?);
        }
        for e in batch.iter().filter(|e| raced.contains(&e.registration_id)) {
            let certificates = certificates_of(e);
            let hub_host = self.hub_host(&e.hub)?;
            // Judged against what DPS holds now: the re-read after 412 may hold another
            // client's certificate the first read did not. An enrollment that lost its race
            // to a delete (the re-read finds none) is not created again: a write that raced was
            // over a record certroll read or created, so one gone since was deleted by another
            // client, and the next roll reports it deleted.
            let kept = Mutex::new(None);
            let build = |read: Option<&Enrollment>| {
                *kept.lock().unwrap_or_else(|p| p.into_inner()) =
                    Some(super::kept_status(e.status, read.map(|r| r.status)));
                if read.is_none() {
                    return Err(BackendError::Refused(format!(
                        "individual enrollment `{}` was deleted by another client of DPS while certroll \
                         wrote it, so it was not created again: {}",
                        e.registration_id,
                        crate::backend::types::deleted_by_another(&e.registration_id)
                    )));
                }
                to_json(&IndividualBody {
                    e,
                    hub_host,
                    certificates: &certificates,
                    read,
                    kept: self.foreign_kept(e, read)?,
                    etag: None,
                })
            };
            self.put_one("enrollments", &e.registration_id, "enrollment", None, &build)
                .await?;
            // The re-read after the lost race holds what the other client wrote.
            if let Some(status) = kept.into_inner().unwrap_or_else(|p| p.into_inner()) {
                written.insert(&e.registration_id, status);
            }
        }
        let mut kept_disabled = self.kept_disabled.lock().unwrap_or_else(|p| p.into_inner());
        for e in batch {
            if e.status == Status::Enabled
                && written.get(e.registration_id.as_str()) == Some(&Status::Disabled)
            {
                kept_disabled.insert(e.registration_id.clone());
            } else {
                kept_disabled.remove(&e.registration_id);
            }
        }
        Ok(())
    }

    fn registration_of(&self, id: &str, v: RegistrationWire) -> RegistrationState {
        let hub = v.assigned_hub.as_deref().map(|h| self.hub_name_of(Some(h)));
        RegistrationState {
            registration_id: v.registration_id.unwrap_or_else(|| id.to_string()),
            status: v.status.unwrap_or_else(|| "unassigned".into()),
            substatus: v.substatus,
            hub,
            cert_thumbprint: None,
            error: v.error_message,
            error_code: v.error_code,
            enrollment_kind: None,
            enrollment_name: None,
            created: parse_time(v.created_date_time_utc.as_deref()),
            updated: parse_time(v.last_updated_date_time_utc.as_deref()),
            etag: v.etag.map(|e| e.trim_matches('"').to_string()),
            device_id: None,
        }
    }

    /// The registration states DPS lists for enrollment group `group` (its devices assigned by
    /// it), page by page (`x-ms-continuation`), by registration id; None when the group does
    /// not exist (DPS keeps the registrations of a deleted group's devices, and lists none).
    async fn group_registrations(&self, group: &str) -> Result<Option<HashMap<String, RegistrationWire>>> {
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
                return Ok(None);
            }
            if !answer.body.trim_ascii_start().starts_with(b"[") {
                return Err(self.dps.error(&call, &answer));
            }
            let items: Vec<RegistrationWire> = answer
                .typed()
                .map_err(|e| self.dps.unreadable(&call, &answer, &e))?;
            for item in items {
                if let Some(id) = item.registration_id.clone() {
                    out.insert(id, item);
                }
            }
            continuation = answer
                .header("x-ms-continuation")
                .filter(|t| !t.is_empty())
                .map(str::to_string);
            if continuation.is_none() {
                return Ok(Some(out));
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
        if answer.status == 404 {
            return Ok(None);
        }
        let state = answer
            .typed()
            .map_err(|e| self.dps.unreadable(&call, &answer, &e))?;
        Ok(Some(self.registration_of(id, state)))
    }
}

impl EnrollmentService for AzureEnrollmentService {
    fn group_registrations_all(&self, group: &str) -> Result<Vec<RegistrationState>> {
        let listed = self
            .rt
            .block_on(self.group_registrations(group))?
            .unwrap_or_default();
        let mut out: Vec<RegistrationState> = listed
            .into_iter()
            .map(|(id, v)| self.registration_of(&id, v))
            .collect();
        out.sort_by(|a, b| a.registration_id.cmp(&b.registration_id));
        Ok(out)
    }

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
            .block_on(self.read::<Record>("enrollmentGroups", name, "enrollment group"))?
        else {
            return Ok(None);
        };
        self.group_of(&r.json, &|ca| self.ca(ca)).map(Some)
    }

    fn groups(&self) -> Result<Vec<EnrollmentGroup>> {
        let all = self
            .rt
            .block_on(self.query::<Value>("enrollmentGroups", "enrollment groups"))?;
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
        let keeps_foreign = !group.foreign.is_empty() && !group.take_back;
        if group.primary.is_none() && group.secondary.is_none() && !keeps_foreign {
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
        let build = |base: Option<&Record>| to_json(&self.group_json(group, base.map(|r| &r.json))?);
        self.rt
            .block_on(self.put_one("enrollmentGroups", &group.name, "enrollment group", None, &build))
    }

    fn individual(&self, registration_id: &str) -> Result<Option<IndividualEnrollment>> {
        let read = self.rt.block_on(async {
            // Read fresh now, so what the scan holds of it is older than what a caller has seen.
            self.written(std::iter::once(&registration_id.to_string())).await;
            self.read::<Enrollment>("enrollments", registration_id, "enrollment")
                .await
        })?;
        let out = read.as_ref().map(|r| self.individual_of(r)).transpose();
        self.keep(registration_id, read);
        out
    }

    fn individual_many(&self, ids: &[String]) -> Result<Vec<Option<IndividualEnrollment>>> {
        let reads = self.rt.block_on(self.read_individuals(ids))?;
        ids.iter()
            .zip(reads)
            .map(|(id, r)| {
                let out = r.as_ref().map(|r| self.individual_of(r)).transpose();
                self.keep(id, r);
                out
            })
            .collect()
    }

    fn individuals(&self) -> Result<Vec<IndividualEnrollment>> {
        let all = self
            .rt
            .block_on(self.query::<Enrollment>("enrollments", "enrollments"))?;
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

    fn put_individuals_reading(
        &mut self,
        batch: &[IndividualEnrollment],
        now: OffsetDateTime,
        ahead: &[String],
    ) -> (Result<()>, Result<Vec<Option<IndividualEnrollment>>>) {
        if ahead.is_empty() {
            return (self.put_individuals(batch, now), Ok(Vec::new()));
        }
        for e in batch {
            for der in [&e.primary, &e.secondary].into_iter().flatten() {
                self.remember(der);
            }
        }
        // Both run on `&self` (the state they share is behind locks); the read on a thread of
        // its own, so parsing its answers does not wait for the write's bodies to be built.
        let this = &*self;
        std::thread::scope(|s| {
            let read = s.spawn(|| this.individual_many(ahead));
            let written = if batch.is_empty() {
                Ok(())
            } else {
                this.rt.block_on(this.put_individuals_async(batch))
            };
            (
                written,
                read.join().unwrap_or_else(|p| std::panic::resume_unwind(p)),
            )
        })
    }

    fn individuals_kept_disabled(&self, ids: &[String]) -> Vec<bool> {
        let kept = self.kept_disabled.lock().unwrap_or_else(|p| p.into_inner());
        ids.iter().map(|id| kept.contains(id)).collect()
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
        let all = self
            .rt
            .block_on(self.query::<Enrollment>("enrollments", "enrollments"))?;
        let mut disabled_by_tp: HashMap<String, Vec<String>> = HashMap::new();
        for e in all.iter().filter(|e| e.status == Status::Disabled) {
            for slot in [&e.primary, &e.secondary].into_iter().flatten() {
                if let Some(tp) = slot.info().and_then(|i| i.sha1_thumbprint) {
                    disabled_by_tp
                        .entry(tp.to_ascii_uppercase())
                        .or_default()
                        .push(e.registration_id.clone().unwrap_or_default());
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
        Ok(
            crate::backend::carried_or_read(self, ids, |rest| self.registration_many(rest))?
                .into_iter()
                .map(|r| r.and_then(|r| r.hub))
                .collect(),
        )
    }

    fn registration_many(&self, ids: &[String]) -> Result<Vec<Option<RegistrationState>>> {
        self.rt
            .block_on(futures::future::join_all(
                ids.iter().map(|id| self.registration_async(id)),
            ))
            .into_iter()
            .collect()
    }

    fn carried_registrations(&self, ids: &[String]) -> Vec<Option<RegistrationState>> {
        // Only a state the read showed is carried. A record without one proves nothing: DPS's
        // enrollment query leaves `registrationState` out even for a registered device
        // (Azure/azure-iot-sdk-csharp#3478; a GET of the enrollment gives it), so such a device
        // is read on its own, as `assigned_hubs` does.
        let seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        ids.iter()
            .map(|id| match seen.get(id) {
                Some(Some(r)) => r.registration().map(|state| self.registration_of(id, state)),
                _ => None,
            })
            .collect()
    }

    fn group_registration_many(
        &self,
        group: &str,
        ids: &[String],
        never_registered: &[bool],
    ) -> Result<Vec<Option<RegistrationState>>> {
        let listed = if ids.len() < 2 {
            HashMap::new()
        } else {
            self.rt
                .block_on(self.group_registrations(group))?
                .unwrap_or_default()
        };
        // The listing holds the devices the group assigned last. One it lacks is assigned by an
        // individual enrollment of its own (DPS prefers one to any group), or never registered,
        // or its group is gone: `revoke ca:X` deletes a group left without a certificate, DPS
        // lists nothing for it (404), and its devices' registrations stay, refused ones
        // included. Only the caller knows "never registered"; any other device is read on its
        // own. A read that found no individual enrollment proves nothing: that refused device
        // has none either.
        let known = ids
            .iter()
            .zip(never_registered)
            .map(|(id, never)| match listed.get(id) {
                Some(v) => Some(Some(self.registration_of(id, v.clone()))),
                None if *never => Some(None),
                None => None,
            })
            .collect();
        crate::backend::known_or_read(ids, known, |unknown| self.registration_many(unknown))
    }

    fn group_assigned_hubs(
        &self,
        group: &str,
        ids: &[String],
        never_registered: &[bool],
    ) -> Result<Vec<Option<String>>> {
        let listed = if ids.len() < 2 {
            None
        } else {
            self.rt.block_on(self.group_registrations(group))?
        };
        // DPS assigns a device by the most specific enrollment that accepts its certificate: an
        // individual enrollment of its own, else the group of its signing CA (a plan gives each
        // CA one group). So a device an existing group's listing lacks, whose enrollment a read
        // of this process found absent (the scan lists every enrollment), was assigned by none:
        // no GET for it (a roll of a fleet not yet handed its certificates read one per device,
        // at DPS's rate). A gone group's devices keep their registrations and are read; so is a
        // device whose own enrollment was read, if the read carried no state (a query's records
        // may not: Azure/azure-iot-sdk-csharp#3478).
        let without_enrollment: Vec<bool> = {
            let seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
            ids.iter().map(|id| matches!(seen.get(id), Some(None))).collect()
        };
        let mut out: Vec<Option<Option<String>>> = vec![None; ids.len()];
        for (i, id) in ids.iter().enumerate() {
            out[i] = match &listed {
                _ if never_registered[i] => Some(None),
                Some(listed) => match listed.get(id) {
                    Some(v) => Some(self.registration_of(id, v.clone()).hub),
                    None if without_enrollment[i] => Some(None),
                    None => None,
                },
                None => None,
            };
        }
        crate::backend::known_or_read(ids, out, |unknown| self.assigned_hubs(unknown))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reprovision_policies_round_trip_through_dps_flags() {
        for p in ["migrate", "reset", "never"] {
            assert_eq!(
                reprovision_of(&json!({"reprovisionPolicy": ReprovisionWire::of(p)})),
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
        let enrollment = |v: Value| -> Enrollment { serde_json::from_str(&v.to_string()).unwrap() };
        let primary_info = json!({"sha1Thumbprint": "ab12", "subjectName": "CN=d",
            "notAfterUtc": "2030-01-01T00:00:00Z", "version": 3});
        let base = enrollment(json!({"registrationId": "d", "etag": "\"e\"",
            "attestation": {"x509": {"clientCertificates": {
                "primary": {"info": primary_info},
                "secondary": {"info": {"sha1Thumbprint": "CD34"}}}}}}));
        let ours = vec![1u8, 2, 3];
        let ours_tp = crate::pki::sha1_thumbprint(&ours);
        let known = |tp: &str| tp == "CD34";
        let read = ForeignCertificate {
            slot: "primary",
            thumbprint: "AB12".into(),
            subject: "CN=d".into(),
            issuer: String::new(),
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
        let refused = foreign_kept(&e, Some(&base), &known).unwrap_err().to_string();
        assert!(
            refused.contains("AB12") && refused.contains("not overwritten"),
            "{refused}"
        );
        assert!(refused.contains("--breach enrollment:d"), "{refused}");
        assert_eq!(
            foreign_kept(&e, None, &known).unwrap().map(|k| k.is_some()),
            [false, false],
            "a create keeps nothing"
        );
        e.foreign = vec![read];
        let kept = foreign_kept(&e, Some(&base), &known).unwrap();
        assert!(kept[1].is_none(), "a known certificate is certroll's to write");
        let info = kept[0].and_then(|k| k.info.as_deref()).map(RawValue::get);
        assert_eq!(
            info.map(|i| serde_json::from_str::<Value>(i).unwrap()),
            Some(primary_info.clone())
        );
        // The write sends the kept slot back as DPS gave it, and nothing in the slot left empty.
        let certificates = certificates_of(&e);
        let body: Value = serde_json::from_slice(
            &to_json(&IndividualBody {
                e: &e,
                hub_host: "h.azure-devices.net",
                certificates: &certificates,
                read: Some(&base),
                kept,
                etag: Some("\"e\""),
            })
            .unwrap(),
        )
        .unwrap();
        assert_eq!(
            body["attestation"]["x509"]["clientCertificates"],
            json!({"primary": {"info": primary_info}, "secondary": null})
        );
        e.primary = Some(ours.clone());
        assert!(
            foreign_kept(&e, Some(&base), &known).is_err(),
            "its own certificate over it"
        );
        e.take_back = true;
        assert_eq!(
            foreign_kept(&e, Some(&base), &known)
                .unwrap()
                .map(|k| k.is_some()),
            [false, false]
        );
        let newer = enrollment(json!({"attestation": {"x509": {"clientCertificates": {
            "primary": {"info": {"sha1Thumbprint": "EF56"}}}}}}));
        assert!(
            foreign_kept(&e, Some(&newer), &known).is_err(),
            "a take-back takes only what it read"
        );
        let own = enrollment(json!({"attestation": {"x509": {"clientCertificates": {
            "primary": {"info": {"sha1Thumbprint": ours_tp}}}}}}));
        assert_eq!(
            foreign_kept(&e, Some(&own), &|_| false)
                .unwrap()
                .map(|k| k.is_some()),
            [false, false]
        );
    }

    /// Another client's CA certificate in a signing slot of a group DPS holds: kept as read by
    /// a write that read it and leaves its slot empty, dropped only by a take-back that read
    /// it, refused otherwise (not read, as after a 412 re-read; certroll's certificate over it;
    /// a primary left empty beside it; a CA reference beside it).
    #[test]
    fn a_group_write_keeps_or_takes_back_a_foreign_ca_certificate_and_never_drops_it_unread() {
        let ours = vec![1u8, 2, 3];
        let ours_tp = crate::pki::sha1_thumbprint(&ours);
        let foreign_info = json!({"sha1Thumbprint": "ab12", "subjectName": "CN=Migration CA",
            "notAfterUtc": "2030-01-01T00:00:00Z"});
        let base = json!({"enrollmentGroupId": "g", "etag": "\"e\"", "attestation": {"x509": {
            "signingCertificates": {"primary": {"info": {"sha1Thumbprint": ours_tp}},
                                    "secondary": {"info": foreign_info}}}}});
        let read = ForeignCertificate {
            slot: "secondary",
            thumbprint: "AB12".into(),
            subject: "CN=Migration CA".into(),
            issuer: String::new(),
            not_before: None,
            not_after: None,
        };
        let mut g = EnrollmentGroup {
            name: "g".into(),
            primary: Some(Slot {
                cert_der: ours.clone(),
                ca_reference: None,
            }),
            secondary: None,
            status: Status::Disabled,
            reprovision: "never".into(),
            hub: "h".into(),
            foreign: vec![],
            take_back: false,
        };
        // The certificate of certroll's the group held when read (resolved by that read).
        let known = |tp: &str| tp == ours_tp;
        let refused =
            |g: &EnrollmentGroup, base: &Value| group_kept(g, Some(base), &known).unwrap_err().to_string();
        let why = refused(&g, &base);
        assert!(
            why.contains("AB12") && why.contains("enrollment group `g`") && why.contains("not overwritten"),
            "unread: {why}"
        );
        assert!(why.contains("--breach group:g"), "{why}");
        assert_eq!(
            group_kept(&g, None, &known).unwrap(),
            [None, None],
            "a create keeps nothing"
        );
        g.foreign = vec![read];
        assert_eq!(
            group_kept(&g, Some(&base), &known).unwrap(),
            [None, Some(json!({"info": foreign_info}))],
            "read and left empty: kept as DPS gave it"
        );
        let mut over = g.clone();
        over.secondary = over.primary.clone().map(|s| Slot {
            cert_der: vec![9, 9],
            ..s
        });
        assert!(
            refused(&over, &base).contains("not overwritten"),
            "certroll's own over it"
        );
        let mut alone = g.clone();
        alone.primary = None;
        assert!(
            refused(&alone, &base).contains("primary slot empty"),
            "no primary beside it"
        );
        let mut referenced = g.clone();
        referenced.primary = Some(Slot {
            cert_der: ours.clone(),
            ca_reference: Some("root-1".into()),
        });
        assert!(refused(&referenced, &base).contains("refers to its CA by name"));
        let mut back = alone.clone();
        back.take_back = true;
        assert_eq!(
            group_kept(&back, Some(&base), &known).unwrap(),
            [None, None],
            "taken back"
        );
        let newer = json!({"attestation": {"x509": {"signingCertificates": {
            "primary": {"info": {"sha1Thumbprint": "EF56"}}}}}});
        assert!(
            refused(&back, &newer).contains("EF56"),
            "a take-back takes only what it read"
        );
        assert_eq!(
            group_kept(&g, Some(&newer), &|tp| tp == "EF56" || tp == ours_tp).unwrap(),
            [None, None],
            "a certificate certroll knows is its own to write"
        );
    }

    #[test]
    fn a_group_read_goes_back_without_what_dps_computes() {
        let read = json!({"enrollmentGroupId": "a", "etag": "\"x\"", "initialTwin": {"tags": {"k": 1}},
            "createdDateTimeUtc": "t", "lastUpdatedDateTimeUtc": "t"});
        let w = writable(read);
        assert_eq!(
            w,
            json!({"enrollmentGroupId": "a", "initialTwin": {"tags": {"k": 1}}})
        );
    }

    #[test]
    fn an_enrollment_read_goes_back_with_what_certroll_does_not_manage_and_without_what_dps_computes() {
        let read = json!({
            "registrationId": "a", "deviceId": "dev-a", "etag": "\"x\"",
            "initialTwin": {"tags": {"k": 1}}, "capabilities": {"iotEdge": true},
            "customAllocationDefinition": null, "aFieldDpsAddsLater": [1, "two"],
            "registrationState": {"registrationId": "a", "assignedHub": "h1.azure-devices.net", "status": "assigned"},
            "createdDateTimeUtc": "t", "lastUpdatedDateTimeUtc": "t",
            "iotHubHostName": "old.azure-devices.net", "allocationPolicy": "hashed",
            "attestation": {"type": "x509", "x509": {"clientCertificates": {
                "primary": {"info": {"sha1Thumbprint": "ab12", "subjectName": "CN=a"}}, "secondary": null},
                "signingCertificates": null, "caReferences": null}, "tpm": null},
            "provisioningStatus": "disabled",
            "reprovisionPolicy": {"updateHubAssignment": true, "migrateDeviceData": false},
        });
        let r: Enrollment = serde_json::from_slice(&serde_json::to_vec(&read).unwrap()).unwrap();
        assert_eq!(r.registration_id.as_deref(), Some("a"));
        assert_eq!(r.etag, "\"x\"");
        assert_eq!(r.status, Status::Disabled);
        assert_eq!(r.reprovision, "reset");
        assert_eq!(r.hub_host.as_deref(), Some("old.azure-devices.net"));
        let tp = r
            .primary
            .as_ref()
            .and_then(SlotRead::info)
            .and_then(|i| i.sha1_thumbprint);
        assert_eq!(tp.as_deref(), Some("ab12"));
        assert!(r.secondary.is_none());
        let state: RegistrationWire =
            serde_json::from_str(r.registration_state.as_ref().unwrap().get()).unwrap();
        assert_eq!(state.assigned_hub.as_deref(), Some("h1.azure-devices.net"));

        let e = IndividualEnrollment {
            registration_id: "a".into(),
            primary: Some(vec![1, 2, 3]),
            secondary: Some(vec![4, 5, 6]),
            status: Status::Enabled,
            reprovision: "never".into(),
            hub: "h2".into(),
            foreign: vec![],
            take_back: false,
        };
        let certificates = certificates_of(&e);
        let body = |read: Option<&Enrollment>, etag: Option<&str>| -> Value {
            serde_json::from_slice(
                &to_json(&IndividualBody {
                    e: &e,
                    hub_host: "h2.azure-devices.net",
                    certificates: &certificates,
                    read,
                    kept: [None, None],
                    etag,
                })
                .unwrap(),
            )
            .unwrap()
        };
        let ours = json!({
            "registrationId": "a",
            "attestation": {"type": "x509", "x509": {"clientCertificates": {
                "primary": {"certificate": "AQID"}, "secondary": {"certificate": "BAUG"}}}},
            "provisioningStatus": "enabled",
            "reprovisionPolicy": {"updateHubAssignment": false, "migrateDeviceData": true},
            "iotHubs": ["h2.azure-devices.net"],
            "allocationPolicy": "static",
        });
        let mut over_read = ours.clone();
        for (k, v) in [
            ("deviceId", json!("dev-a")),
            ("initialTwin", json!({"tags": {"k": 1}})),
            ("capabilities", json!({"iotEdge": true})),
            ("customAllocationDefinition", Value::Null),
            ("aFieldDpsAddsLater", json!([1, "two"])),
            ("etag", json!("\"x\"")),
            // The read is disabled: a write over an existing enrollment never enables it.
            ("provisioningStatus", json!("disabled")),
        ] {
            over_read[k] = v;
        }
        assert_eq!(body(Some(&r), Some(&r.etag)), over_read);
        let mut created = ours;
        created["deviceId"] = json!("a");
        assert_eq!(
            body(None, None),
            created,
            "a new enrollment's device id is its registration id"
        );
        let no_device: Enrollment =
            serde_json::from_str(r#"{"registrationId": "a", "deviceId": null}"#).unwrap();
        assert_eq!(body(Some(&no_device), None), created);
        assert_eq!(
            certificate_der("AQID"),
            Some(vec![1, 2, 3]),
            "base64 of DER reads back"
        );
    }
}
