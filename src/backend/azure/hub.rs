//! IoT Hub's service API (device identities, bulk registry operations, direct methods;
//! azure-wire.md §4) as [`AzureHubRegistry`], which implements
//! [`HubRegistry`] against the hubs the plan's
//! `[backend.hubs.NAME]` name, with SAS tokens of each hub's policy.
//!
//! Many identities are read with the registry query (`POST /devices/query`, `SELECT * FROM
//! devices WHERE deviceId IN [...]`, 100 ids a query, pages followed by `x-ms-continuation`):
//! each answer is a device twin, which carries the identity's status, authentication and
//! `deviceEtag`, everything an update needs.
//!
//! Updates never overwrite a concurrent change: each carries the etag it read (`If-Match`), and
//! on 412 the identity is read again and the change applied to what is there now.

use super::rest::{Call, RestClient, ServiceSpec, if_match, segment};
use super::sas::{SasKey, SasPolicy};
use super::wire::{BulkResult, Fields, Kept, Text};
use super::{SetupError, client_options, http_client, runtime};
use crate::backend::types::*;
use crate::backend::{BackendError, HubRegistry, Result};
use crate::plan::AzureConfig;
use azure_core::http::Method;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use serde_json::{Value, json};
use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use time::OffsetDateTime;

/// The api-version the Azure IoT service SDKs send.
pub const API_VERSION: &str = "2021-04-12";
/// IoT Hub's identity registry limit for one S1 unit: 100 operations a minute.
pub const DEFAULT_RATE: f64 = 100.0 / 60.0;

/// Direct method calls per second by default: IoT Hub meters direct methods apart from the
/// registry, at 160 KB/s per S1 unit counted in 4 KB blocks, so 40 small calls a second
/// (https://learn.microsoft.com/azure/iot-hub/iot-hub-devguide-quotas-throttling).
pub const METHOD_RATE: f64 = 40.0;
/// Most identities one bulk registry call may carry.
pub const BULK_LIMIT: usize = 100;
/// Most device ids one registry query names (`WHERE deviceId IN [...]`); the page it asks for
/// is as large, so one query usually answers in one page.
pub const QUERY_IDS: usize = 100;
/// Longest query text certroll sends (ids are joined until this many characters).
const QUERY_CHARS: usize = 8000;
/// How many times an update is re-read and re-applied after 412 before giving up.
const MAX_PRECONDITION_RETRIES: usize = 5;

/// The plan's IoT hubs, by the names its groups and enrollments use.
pub struct AzureHubRegistry {
    rt: tokio::runtime::Runtime,
    hubs: BTreeMap<String, RestClient>,
    /// The same hubs for direct methods, which IoT Hub meters apart from registry operations
    /// (so a roll's deliveries do not wait behind the registry's 100 operations a minute).
    methods: BTreeMap<String, RestClient>,
    /// What the last read of each identity saw (hub, device id → `None`: absent), taken by the
    /// next bulk update of it so a read-then-write verb costs no second GET. A stale entry is
    /// safe: its update fails its etag (412) and is read again and re-applied.
    seen: Mutex<HashMap<(String, String), Option<Device>>>,
    /// The identities (hub, device id) this process last read or wrote disabled: an update
    /// keeps a status another client set, so a roll learns from its own writes, with no read
    /// of its own, which devices the hub refuses (see [`HubRegistry::identities_seen_disabled`]).
    disabled: Mutex<std::collections::HashSet<(String, String)>>,
}

/// What paces an [`AzureHubRegistry`]'s tries, per hub: its registry client's and its direct
/// methods' (see [`AzureHubRegistry::sharing`]).
#[derive(Clone)]
pub struct HubPacing {
    registry: BTreeMap<String, super::rest::Sharable>,
    methods: BTreeMap<String, super::rest::Sharable>,
}

/// Most identity reads kept for the updates that follow them (`seen`).
const SEEN_LIMIT: usize = 50_000;

impl std::fmt::Debug for AzureHubRegistry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AzureHubRegistry")
            .field("hubs", &self.hubs.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

/// A device identity as IoT Hub holds it: certroll's view, its etag, and the members certroll
/// does not manage (`capabilities`, `statusReason`, scopes, ...) as read, so an update sends
/// them back unchanged.
#[derive(Clone)]
struct Device {
    identity: HubIdentity,
    etag: String,
    kept: Kept,
}

/// `authentication.x509Thumbprint` as read.
#[derive(Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ThumbprintsRead<'a> {
    #[serde(default, borrow)]
    primary_thumbprint: Option<Text<'a>>,
    #[serde(default, borrow)]
    secondary_thumbprint: Option<Text<'a>>,
}

/// `authentication` as read (its symmetric keys are never certroll's).
#[derive(Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct AuthenticationRead<'a> {
    #[serde(default, borrow, rename = "type")]
    kind: Option<Text<'a>>,
    #[serde(default, borrow)]
    x509_thumbprint: Option<ThumbprintsRead<'a>>,
}

/// certroll's view of an identity from what IoT Hub answered (`device_id` when it names none).
fn identity_from(
    hub: &str,
    device_id: Option<&str>,
    fallback_id: &str,
    status: Option<&str>,
    kind: Option<&str>,
    thumbprints: Option<&ThumbprintsRead<'_>>,
) -> HubIdentity {
    let tp = |t: Option<&Text<'_>>| t.filter(|s| !s.is_empty()).map(|s| s.to_string());
    HubIdentity {
        hub: hub.to_string(),
        device_id: device_id.unwrap_or(fallback_id).to_string(),
        status: Status::parse(status.unwrap_or("disabled")),
        auth_type: kind.unwrap_or("selfSigned").to_string(),
        primary_thumbprint: tp(thumbprints.and_then(|t| t.primary_thumbprint.as_ref())),
        secondary_thumbprint: tp(thumbprints.and_then(|t| t.secondary_thumbprint.as_ref())),
    }
}

/// A `Device` as `GET /devices/{id}` answers it: certroll's members parsed, the rest kept.
struct DeviceRead<'a> {
    device_id: Option<Text<'a>>,
    etag: Option<String>,
    status: Option<Text<'a>>,
    authentication: Option<AuthenticationRead<'a>>,
    kept: Fields<'a>,
}

impl<'de> Deserialize<'de> for DeviceRead<'de> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = DeviceRead<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a device identity (a JSON object)")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> std::result::Result<DeviceRead<'de>, A::Error> {
                let mut out = DeviceRead {
                    device_id: None,
                    etag: None,
                    status: None,
                    authentication: None,
                    kept: Fields::default(),
                };
                while let Some(key) = map.next_key::<Text<'de>>()? {
                    match &*key {
                        "deviceId" => out.device_id = map.next_value()?,
                        "etag" => out.etag = map.next_value()?,
                        "status" => out.status = map.next_value()?,
                        "authentication" => out.authentication = map.next_value()?,
                        _ => out.kept.0.push((key, map.next_value()?)),
                    }
                }
                Ok(out)
            }
        }
        d.deserialize_map(V)
    }
}

impl DeviceRead<'_> {
    fn device(&self, hub: &str, device_id: &str, etag: String) -> Device {
        let auth = self.authentication.as_ref();
        Device {
            identity: identity_from(
                hub,
                self.device_id.as_deref(),
                device_id,
                self.status.as_deref(),
                auth.and_then(|a| a.kind.as_deref()),
                auth.and_then(|a| a.x509_thumbprint.as_ref()),
            ),
            etag,
            kept: Kept::new(&self.kept),
        }
    }
}

/// A twin from the registry query (IoT Hub's `Twin`: flat `authenticationType`,
/// `x509Thumbprint`, and the identity's etag as `deviceEtag`); its tags and properties are
/// not read.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct TwinRead<'a> {
    #[serde(default, borrow)]
    device_id: Option<Text<'a>>,
    #[serde(default, borrow)]
    module_id: Option<Text<'a>>,
    #[serde(default)]
    device_etag: Option<String>,
    #[serde(default, borrow)]
    status: Option<Text<'a>>,
    #[serde(default, borrow)]
    authentication_type: Option<Text<'a>>,
    #[serde(default, borrow)]
    x509_thumbprint: Option<ThumbprintsRead<'a>>,
    #[serde(default, borrow)]
    status_reason: Option<&'a RawValue>,
    #[serde(default, borrow)]
    capabilities: Option<&'a RawValue>,
    #[serde(default, borrow)]
    device_scope: Option<&'a RawValue>,
    #[serde(default, borrow)]
    parent_scopes: Option<&'a RawValue>,
}

/// The device identity a twin from the registry query describes, with the identity's members
/// a twin carries kept for its update; None when the twin lacks what an update needs.
fn device_of_twin(hub: &str, twin: &TwinRead<'_>) -> Option<Device> {
    let device_id = twin.device_id.as_deref()?;
    let etag = twin.device_etag.clone()?;
    let mut kept = Fields::default();
    for (name, value) in [
        ("statusReason", twin.status_reason),
        ("capabilities", twin.capabilities),
        ("deviceScope", twin.device_scope),
        ("parentScopes", twin.parent_scopes),
    ] {
        if let Some(v) = value {
            kept.0.push((Text(name.into()), v));
        }
    }
    Some(Device {
        identity: identity_from(
            hub,
            Some(device_id),
            device_id,
            twin.status.as_deref(),
            twin.authentication_type.as_deref(),
            twin.x509_thumbprint.as_ref(),
        ),
        etag,
        kept: Kept::new(&kept),
    })
}

/// Members of an identity IoT Hub computes itself: a bulk entry (`ExportImportDevice`) has no
/// such members, so they are not sent back in one.
const READ_ONLY: [&str; 6] = [
    "generationId",
    "connectionState",
    "connectionStateUpdatedTime",
    "statusUpdatedTime",
    "lastActivityTime",
    "cloudToDeviceMessageCount",
];

/// What an identity write sends: certroll's members of `identity` over what was kept of the
/// device read, as a `Device` (`PUT /devices/{id}`) or as a bulk `updateIfMatchETag` entry
/// (`ExportImportDevice`: `id` and `eTag`, no read-only members).
struct DeviceBody<'a> {
    identity: &'a HubIdentity,
    /// The status written: `identity`'s, kept disabled where the device read is
    /// ([`super::kept_status`]).
    status: Status,
    kept: &'a Kept,
    etag: Option<&'a str>,
    bulk: bool,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ThumbprintsWrite<'a> {
    primary_thumbprint: Option<&'a str>,
    secondary_thumbprint: Option<&'a str>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct SymmetricKeyWrite {
    primary_key: (),
    secondary_key: (),
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct AuthenticationWrite<'a> {
    #[serde(rename = "type")]
    kind: &'a str,
    x509_thumbprint: ThumbprintsWrite<'a>,
    symmetric_key: SymmetricKeyWrite,
}

impl<'a> Serialize for DeviceBody<'a> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let identity = self.identity;
        let mut m = s.serialize_map(None)?;
        let bulk = self.bulk;
        self.kept
            .write_into(&mut m, &|k| bulk && READ_ONLY.contains(&k))?;
        if self.bulk {
            m.serialize_entry("id", &identity.device_id)?;
            m.serialize_entry("eTag", &self.etag)?;
            m.serialize_entry("importMode", "updateIfMatchETag")?;
        } else {
            m.serialize_entry("deviceId", &identity.device_id)?;
            if let Some(etag) = self.etag {
                m.serialize_entry("etag", etag)?;
            }
        }
        m.serialize_entry("status", self.status.as_str())?;
        let by_thumbprint = identity.auth_type != "certificateAuthority";
        let tp = |t: &'a Option<String>| t.as_deref().filter(|_| by_thumbprint);
        m.serialize_entry(
            "authentication",
            &AuthenticationWrite {
                kind: &identity.auth_type,
                x509_thumbprint: ThumbprintsWrite {
                    primary_thumbprint: tp(&identity.primary_thumbprint),
                    secondary_thumbprint: tp(&identity.secondary_thumbprint),
                },
                symmetric_key: SymmetricKeyWrite {
                    primary_key: (),
                    secondary_key: (),
                },
            },
        )?;
        m.end()
    }
}

/// A registry query's body.
#[derive(Serialize)]
struct QueryBody<'a> {
    query: &'a str,
}

/// Whether an id can stand in a query's string literal as it is (IoT Hub ids may hold `'`,
/// which such an id's own GET reads instead).
fn quotable(device_id: &str) -> bool {
    !device_id.contains(['\'', '\\'])
}

/// The operation an error names for `verb` (`query`, `update`) on the identities of `count`
/// devices, the first of which is the error's target: "IoT Hub query device identity `valve-1`
/// failed", "IoT Hub update 50 device identities including `valve-1` failed".
fn batch_operation(verb: &str, count: usize) -> String {
    match count {
        1 => format!("{verb} device identity"),
        n => format!("{verb} {n} device identities including"),
    }
}

/// `ids` cut into queries of at most [`QUERY_IDS`] ids and [`QUERY_CHARS`] characters.
fn query_chunks<'a>(ids: &[&'a str]) -> Vec<Vec<&'a str>> {
    let mut out: Vec<Vec<&str>> = Vec::new();
    let mut chars = 0;
    for id in ids {
        let cost = id.len() + 4;
        match out.last_mut() {
            Some(last) if last.len() < QUERY_IDS && chars + cost <= QUERY_CHARS => {
                last.push(id);
                chars += cost;
            }
            _ => {
                out.push(vec![id]);
                chars = 64 + cost;
            }
        }
    }
    out
}

impl AzureHubRegistry {
    /// Builds one client per `[backend.hubs.NAME]` (each SAS key read from its `sas_key_env`
    /// now). Fails when a key's variable is unset or its value is not base64.
    pub fn new(config: &AzureConfig) -> std::result::Result<AzureHubRegistry, SetupError> {
        Self::new_with_env(config, &|v| std::env::var(v).ok())
    }

    /// As [`new`](Self::new), reading the variables through `env` (tests, which cannot change
    /// the process environment safely while other threads run).
    pub fn new_with_env(
        config: &AzureConfig,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> std::result::Result<AzureHubRegistry, SetupError> {
        Self::build(config, env, None)
    }

    /// Another client of the same hubs as `other` that shares its pacing (each hub's registry
    /// rate and its direct methods' rate, their `Retry-After` holds and bounds in flight): what
    /// IoT Hub sees of the two together keeps to the plan's `rate` and `concurrency`.
    pub fn sharing(
        config: &AzureConfig,
        other: &HubPacing,
    ) -> std::result::Result<AzureHubRegistry, SetupError> {
        Self::build(config, &|v| std::env::var(v).ok(), Some(other))
    }

    /// The pacing of this client's tries, for [`sharing`](Self::sharing).
    pub fn pacing(&self) -> HubPacing {
        HubPacing {
            registry: self.hubs.iter().map(|(k, c)| (k.clone(), c.sharable())).collect(),
            methods: self
                .methods
                .iter()
                .map(|(k, c)| (k.clone(), c.sharable()))
                .collect(),
        }
    }

    fn build(
        config: &AzureConfig,
        env: &dyn Fn(&str) -> Option<String>,
        share: Option<&HubPacing>,
    ) -> std::result::Result<AzureHubRegistry, SetupError> {
        let http = http_client(config)?;
        let mut hubs = BTreeMap::new();
        let mut methods = BTreeMap::new();
        for (name, hub) in &config.hubs {
            let key = SasKey::from_env(&hub.sas_policy, &hub.sas_key_env, env)?;
            if let Some((registry, method)) =
                share.and_then(|o| Some((o.registry.get(name)?, o.methods.get(name)?)))
            {
                let auth = |key| SasPolicy::new(&hub.host, key);
                let method_key = SasKey::from_env(&hub.sas_policy, &hub.sas_key_env, env)?;
                methods.insert(
                    name.clone(),
                    RestClient::sharing(method, client_options(http.clone(), config), auth(method_key))?,
                );
                hubs.insert(
                    name.clone(),
                    RestClient::sharing(registry, client_options(http.clone(), config), auth(key))?,
                );
                continue;
            }
            let method_client = RestClient::new(
                ServiceSpec {
                    service: "IoT Hub",
                    base: format!("https://{}", hub.host),
                    api_version: API_VERSION,
                    default_rate: METHOD_RATE,
                    burst_secs: 1.0,
                },
                client_options(http.clone(), config),
                SasPolicy::new(
                    &hub.host,
                    SasKey::from_env(&hub.sas_policy, &hub.sas_key_env, env)?,
                ),
                crate::plan::ClientLimits {
                    rate: None,
                    concurrency: hub.limits.concurrency,
                },
            )?;
            methods.insert(name.clone(), method_client);
            let client = RestClient::new(
                ServiceSpec {
                    service: "IoT Hub",
                    base: format!("https://{}", hub.host),
                    api_version: API_VERSION,
                    default_rate: DEFAULT_RATE,
                    burst_secs: 0.5,
                },
                client_options(http.clone(), config),
                SasPolicy::new(&hub.host, key),
                hub.limits,
            )?;
            hubs.insert(name.clone(), client);
        }
        Ok(AzureHubRegistry {
            rt: runtime()?,
            seen: Mutex::new(HashMap::new()),
            disabled: Mutex::new(std::collections::HashSet::new()),
            hubs,
            methods,
        })
    }

    fn client(&self, hub: &str) -> Result<&RestClient> {
        self.hubs.get(hub).ok_or_else(|| {
            BackendError::Refused(format!(
                "hub `{hub}` is not in the plan's [backend.hubs] (it has {})",
                self.hubs.keys().cloned().collect::<Vec<_>>().join(", ")
            ))
        })
    }

    /// `POST /twins/{id}/methods` on `hub`: the device's status and payload (see
    /// [`HubRegistry::invoke_method`]).
    async fn invoke_async(
        &self,
        hub: &str,
        device_id: &str,
        call: &DirectMethodCall,
    ) -> Result<DirectMethodResult> {
        self.client(hub)?;
        let client = &self.methods[hub];
        let operation = format!("invoke direct method `{}`", call.method_name);
        let request = Call::new(
            Method::Post,
            format!("/twins/{}/methods", segment(device_id)),
            &operation,
            device_id,
        )
        .json(json!({
            "methodName": call.method_name,
            "payload": call.payload,
            "responseTimeoutInSeconds": call.response_timeout_secs,
            "connectTimeoutInSeconds": 0,
        }));
        let answer = client.expect(&request, &[200]).await?;
        let body = answer.json();
        let status = body["status"]
            .as_i64()
            .and_then(|s| i32::try_from(s).ok())
            .ok_or_else(|| BackendError::Remote {
                service: "IoT Hub",
                operation: operation.clone(),
                target: device_id.to_string(),
                status: Some(200),
                code: "InvalidResponse".into(),
                message: "the answer has no device status".into(),
            })?;
        Ok(DirectMethodResult {
            status,
            payload: body.get("payload").cloned().unwrap_or(Value::Null),
        })
    }

    async fn read(client: &RestClient, hub: &str, device_id: &str) -> Result<Option<Device>> {
        let path = format!("/devices/{}", segment(device_id));
        let call = Call::new(Method::Get, path, "get device identity", device_id);
        let answer = client.expect(&call, &[200, 404]).await?;
        if answer.status == 404 {
            return Ok(None);
        }
        let read: DeviceRead = answer
            .typed()
            .map_err(|e| client.unreadable(&call, &answer, &e))?;
        let etag = read
            .etag
            .clone()
            .or_else(|| answer.header("etag").map(str::to_string))
            .unwrap_or_else(|| "*".into());
        Ok(Some(read.device(hub, device_id, etag)))
    }

    /// The identities of `ids` in one hub by registry query (a query per [`query_chunks`],
    /// concurrently, each followed through its pages): by id, each device found (None for a
    /// twin that lacks what an update needs); an absent id is not in the map.
    async fn query(client: &RestClient, hub: &str, ids: &[&str]) -> Result<HashMap<String, Option<Device>>> {
        let chunks = query_chunks(ids);
        let pages = futures::future::join_all(chunks.iter().map(|chunk| async move {
            let list = chunk
                .iter()
                .map(|id| format!("'{id}'"))
                .collect::<Vec<_>>()
                .join(", ");
            let query = format!("SELECT * FROM devices WHERE deviceId IN [{list}]");
            // The error names the operation, then its target in backticks: the count goes with
            // the operation, so the target is a device id alone.
            let operation = batch_operation("query", chunk.len());
            let target = chunk[0].to_string();
            let mut found = Vec::new();
            let mut continuation: Option<String> = None;
            loop {
                let mut call = Call::new(Method::Post, "/devices/query".into(), &operation, &target)
                    .header("x-ms-max-item-count", chunk.len().to_string())
                    .json(QueryBody { query: &query });
                if let Some(token) = &continuation {
                    call = call.header("x-ms-continuation", token.clone());
                }
                let answer = client.expect(&call, &[200]).await?;
                if !answer.body.trim_ascii_start().starts_with(b"[") {
                    return Err(client.error(&call, &answer));
                }
                let twins: Vec<TwinRead> = answer
                    .typed()
                    .map_err(|e| client.unreadable(&call, &answer, &e))?;
                for twin in &twins {
                    // Module twins answer only queries on `devices.modules`; skip any all the same.
                    if twin.module_id.as_deref().is_some_and(|m| !m.is_empty()) {
                        continue;
                    }
                    if let Some(id) = twin.device_id.as_deref() {
                        found.push((id.to_string(), device_of_twin(hub, twin)));
                    }
                }
                continuation = answer
                    .header("x-ms-continuation")
                    .filter(|t| !t.is_empty())
                    .map(str::to_string);
                if continuation.is_none() {
                    return Ok(found);
                }
            }
        }))
        .await;
        let mut out = HashMap::new();
        for page in pages {
            out.extend(page?);
        }
        Ok(out)
    }

    /// The identities `ids` in one hub, in order: by registry query where an id can be asked
    /// for, by its own GET otherwise (an id a query cannot quote, or whose twin lacked its etag).
    async fn read_hub(client: &RestClient, hub: &str, ids: &[&str]) -> Result<Vec<Option<Device>>> {
        let quoted: Vec<&str> = ids.iter().copied().filter(|id| quotable(id)).collect();
        let mut found = if quoted.is_empty() {
            HashMap::new()
        } else {
            Self::query(client, hub, &quoted).await?
        };
        // Some: settled by the query (found, or absent); None: read by its own GET (as is an
        // id named twice, after its first).
        let settled: Vec<Option<Option<Device>>> = ids
            .iter()
            .map(|id| {
                if !quotable(id) {
                    return None;
                }
                match found.get_mut(*id) {
                    Some(slot) if slot.is_some() => Some(slot.take()),
                    Some(_) => None,
                    None => Some(None),
                }
            })
            .collect();
        // Only what the query did not settle costs a future (usually nothing).
        let unsettled: Vec<usize> = (0..ids.len()).filter(|&i| settled[i].is_none()).collect();
        let reads =
            futures::future::join_all(unsettled.iter().map(|&i| Self::read(client, hub, ids[i]))).await;
        let mut out = settled;
        for (i, read) in unsettled.into_iter().zip(reads) {
            out[i] = Some(read?);
        }
        Ok(out.into_iter().map(Option::flatten).collect())
    }

    /// Every identity of `wanted` (hub, device id), in order; the hubs are read concurrently.
    async fn read_many(&self, wanted: &[(String, String)]) -> Result<Vec<Option<Device>>> {
        let mut by_hub: BTreeMap<&str, Vec<(usize, &str)>> = BTreeMap::new();
        for (i, (hub, id)) in wanted.iter().enumerate() {
            self.client(hub)?;
            by_hub.entry(hub).or_default().push((i, id));
        }
        let reads = futures::future::join_all(by_hub.iter().map(|(hub, at)| async move {
            let ids: Vec<&str> = at.iter().map(|(_, id)| *id).collect();
            Self::read_hub(&self.hubs[*hub], hub, &ids).await
        }))
        .await;
        let mut out: Vec<Option<Device>> = vec![None; wanted.len()];
        for ((_, at), read) in by_hub.iter().zip(reads) {
            for ((i, _), device) in at.iter().zip(read?) {
                out[*i] = device;
            }
        }
        Ok(out)
    }

    /// Applies `identity` to the device as it is now: re-read and re-applied on 412, so a
    /// concurrent change to what certroll does not manage is kept.
    async fn update_one(
        client: &RestClient,
        identity: &HubIdentity,
        mut current: Option<Device>,
    ) -> Result<Status> {
        let id = &identity.device_id;
        let mut tries = 0;
        loop {
            let device = match current.take() {
                Some(d) => d,
                None => Self::read(client, &identity.hub, id).await?.ok_or_else(|| {
                    BackendError::NotFound(format!("device `{id}` in hub `{}`", identity.hub))
                })?,
            };
            let status = super::kept_status(identity.status, Some(device.identity.status));
            let call = Call::new(
                Method::Put,
                format!("/devices/{}", segment(id)),
                "update device identity",
                id,
            )
            .header("if-match", if_match(&device.etag))
            .json(DeviceBody {
                identity,
                status,
                kept: &device.kept,
                etag: Some(&device.etag),
                bulk: false,
            });
            let answer = client.send(&call).await?;
            match answer.status {
                200 => return Ok(status),
                412 if tries < MAX_PRECONDITION_RETRIES => tries += 1,
                412 => return Err(client.kept_changing(&call, &answer, tries)),
                _ => return Err(client.error(&call, &answer)),
            }
        }
    }

    /// Creates a device identity; a device that exists already is IoT Hub's 409
    /// `DeviceAlreadyExists` (identities are normally created by DPS when a device registers).
    pub fn create_identity(&mut self, identity: &HubIdentity) -> Result<()> {
        let client = self.client(&identity.hub)?;
        let call = Call::new(
            Method::Put,
            format!("/devices/{}", segment(&identity.device_id)),
            "create device identity",
            &identity.device_id,
        )
        .json(DeviceBody {
            identity,
            status: identity.status,
            kept: &Kept::new(
                &serde_json::from_str(r#"{"capabilities": {"iotEdge": false}}"#).unwrap_or_default(),
            ),
            etag: None,
            bulk: false,
        });
        self.rt.block_on(client.expect(&call, &[200])).map(|_| ())
    }

    /// Updates identities of one hub in bulk calls of at most [`BULK_LIMIT`], each entry with
    /// the etag just read (`updateIfMatchETag`); entries that lose a race (412) are re-read and
    /// re-applied one by one. Returns the status each identity was written with, in the order
    /// given: a status another client set is kept (see [`super::kept_status`]).
    async fn update_bulk(
        client: &RestClient,
        batch: &[&HubIdentity],
        carried: Vec<Option<Option<Device>>>,
    ) -> Result<Vec<Status>> {
        let ids: Vec<&str> = batch.iter().map(|i| i.device_id.as_str()).collect();
        let hub = batch.first().map(|i| i.hub.clone()).unwrap_or_default();
        // What no read of this process carried is read now, by query.
        let missing: Vec<&str> = ids
            .iter()
            .zip(&carried)
            .filter(|(_, c)| c.is_none())
            .map(|(id, _)| *id)
            .collect();
        let mut fresh = if missing.is_empty() {
            Vec::new()
        } else {
            Self::read_hub(client, &hub, &missing).await?
        }
        .into_iter();
        let reads: Vec<Result<Option<Device>>> = carried
            .into_iter()
            .map(|c| Ok(c.unwrap_or_else(|| fresh.next().flatten())))
            .collect();
        let mut devices = Vec::with_capacity(batch.len());
        for (identity, read) in batch.iter().zip(reads) {
            let device = read?.ok_or_else(|| {
                BackendError::NotFound(format!("device `{}` in hub `{}`", identity.device_id, hub))
            })?;
            devices.push(device);
        }
        let mut written: Vec<Status> = batch
            .iter()
            .zip(&devices)
            .map(|(identity, device)| super::kept_status(identity.status, Some(device.identity.status)))
            .collect();
        let entries: Vec<DeviceBody> = batch
            .iter()
            .zip(&devices)
            .zip(&written)
            .map(|((identity, device), status)| DeviceBody {
                identity,
                status: *status,
                kept: &device.kept,
                etag: Some(&device.etag),
                bulk: true,
            })
            .collect();
        let operation = batch_operation("update", batch.len());
        let target = ids[0].to_string();
        // About 300 bytes an entry.
        let size = entries.len() * 384;
        let call = Call::new(Method::Post, "/devices".into(), &operation, &target).json_sized(&entries, size);
        let answer = client.expect(&call, &[200, 400]).await?;
        if answer.status == 200 {
            return Ok(written);
        }
        let result = answer.typed::<BulkResult>().ok();
        if result.as_ref().and_then(|r| r.is_successful) == Some(true) {
            return Ok(written);
        }
        let Some(errors) = result.and_then(|r| r.errors) else {
            return Err(client.error(&call, &answer));
        };
        let mut raced = std::collections::HashSet::new();
        for e in errors {
            let id = e.device_id.unwrap_or_default();
            let code = e
                .error_code
                .as_ref()
                .map(|c| c.text().into_owned())
                .unwrap_or_default();
            if code == "PreconditionFailed" {
                raced.insert(id);
            } else {
                return Err(BackendError::Remote {
                    service: "IoT Hub",
                    operation: "update device identity".into(),
                    target: id,
                    status: Some(answer.status),
                    code,
                    message: e.error_status.unwrap_or_default(),
                });
            }
        }
        // The re-read of one that lost its race holds what the other client wrote: its status
        // is what the write keeps.
        for (identity, status) in batch.iter().zip(&mut written) {
            if raced.contains(&identity.device_id) {
                *status = Self::update_one(client, identity, None).await?;
            }
        }
        Ok(written)
    }

    /// Notes the status this process last read or wrote of each identity (see `disabled`).
    fn note<'a>(&self, statuses: impl IntoIterator<Item = (&'a str, &'a str, Status)>) {
        let mut disabled = self.disabled.lock().unwrap_or_else(|p| p.into_inner());
        for (hub, id, status) in statuses {
            let key = (hub.to_string(), id.to_string());
            if status == Status::Disabled {
                disabled.insert(key);
            } else {
                disabled.remove(&key);
            }
        }
    }

    /// [`HubRegistry::update_identities`] on `&self`: bulk updates by hub, each page under the
    /// etag its identities were read with (`seen`), at the client's concurrency.
    fn update_many(&self, batch: &[HubIdentity]) -> Result<()> {
        let mut by_hub: BTreeMap<&str, Vec<&HubIdentity>> = BTreeMap::new();
        for identity in batch {
            by_hub.entry(&identity.hub).or_default().push(identity);
        }
        let stage = crate::progress::stage("IoT Hub identities", batch.len() as u64);
        let stage = &stage;
        let mut work = Vec::new();
        for (hub, identities) in &by_hub {
            let client = self.client(hub)?;
            for chunk in identities.chunks(BULK_LIMIT) {
                let carried = {
                    let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
                    chunk
                        .iter()
                        .map(|i| seen.remove(&(i.hub.clone(), i.device_id.clone())))
                        .collect()
                };
                let n = chunk.len() as u64;
                let page = Self::update_bulk(client, chunk, carried);
                work.push(async move {
                    let done = page.await.map(|statuses| (chunk, statuses));
                    stage.advance(n);
                    done
                });
            }
        }
        let pages = self
            .rt
            .block_on(futures::future::join_all(work))
            .into_iter()
            .collect::<Result<Vec<_>>>()?;
        self.note(pages.iter().flat_map(|(chunk, statuses)| {
            chunk
                .iter()
                .zip(statuses)
                .map(|(i, s)| (i.hub.as_str(), i.device_id.as_str(), *s))
        }));
        Ok(())
    }
}

impl HubRegistry for AzureHubRegistry {
    fn identity(&self, hub: &str, device_id: &str) -> Result<Option<HubIdentity>> {
        let client = self.client(hub)?;
        let identity = self
            .rt
            .block_on(Self::read(client, hub, device_id))?
            .map(|d| d.identity);
        self.note(identity.iter().map(|i| (hub, device_id, i.status)));
        Ok(identity)
    }

    fn identity_many(&self, wanted: &[(String, String)]) -> Result<Vec<Option<HubIdentity>>> {
        let reads = self.rt.block_on(self.read_many(wanted))?;
        let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        // Reads never followed by an update (status, check) must not grow this without bound.
        if seen.len() + wanted.len() > SEEN_LIMIT {
            seen.clear();
        }
        let out: Vec<Option<HubIdentity>> = wanted
            .iter()
            .zip(reads)
            .map(|(key, device)| {
                let identity = device.as_ref().map(|d| d.identity.clone());
                seen.insert(key.clone(), device);
                identity
            })
            .collect();
        drop(seen);
        self.note(
            wanted
                .iter()
                .zip(&out)
                .filter_map(|((hub, id), i)| Some((hub.as_str(), id.as_str(), i.as_ref()?.status))),
        );
        Ok(out)
    }

    fn delete_identity(&mut self, hub: &str, device_id: &str) -> Result<()> {
        let client = self.client(hub)?;
        let call = Call::new(
            Method::Delete,
            format!("/devices/{}", segment(device_id)),
            "delete device identity",
            device_id,
        )
        .header("if-match", "\"*\"");
        // Already gone is done: a rerun of a finished delete changes nothing.
        self.rt
            .block_on(client.expect(&call, &[200, 204, 404]))
            .map(|_| ())
    }

    fn update_identity(&mut self, identity: &HubIdentity, _now: OffsetDateTime) -> Result<()> {
        let client = self.client(&identity.hub)?;
        let status = self.rt.block_on(Self::update_one(client, identity, None))?;
        self.note([(identity.hub.as_str(), identity.device_id.as_str(), status)]);
        Ok(())
    }

    fn update_identities(&mut self, batch: &[HubIdentity], _now: OffsetDateTime) -> Result<()> {
        self.update_many(batch)
    }

    fn update_identities_reading(
        &mut self,
        batch: &[HubIdentity],
        now: OffsetDateTime,
        ahead: &[(String, String)],
    ) -> (Result<()>, Result<Vec<Option<HubIdentity>>>) {
        if ahead.is_empty() {
            return (self.update_identities(batch, now), Ok(Vec::new()));
        }
        // As `EnrollmentService::put_individuals_reading` of DPS: both on `&self`, the read on
        // a thread of its own. An identity read ahead is kept for its own later update (`seen`),
        // never taken by this batch's, which holds other devices.
        let this = &*self;
        std::thread::scope(|s| {
            let read = s.spawn(|| this.identity_many(ahead));
            let written = if batch.is_empty() {
                Ok(())
            } else {
                this.update_many(batch)
            };
            (
                written,
                read.join().unwrap_or_else(|p| std::panic::resume_unwind(p)),
            )
        })
    }

    fn identities_seen_disabled(&self, ids: &[String]) -> Vec<Option<String>> {
        let disabled = self.disabled.lock().unwrap_or_else(|p| p.into_inner());
        if disabled.is_empty() {
            return vec![None; ids.len()];
        }
        let by_id: HashMap<&str, &str> = disabled
            .iter()
            .map(|(hub, id)| (id.as_str(), hub.as_str()))
            .collect();
        ids.iter()
            .map(|id| by_id.get(id.as_str()).map(|hub| hub.to_string()))
            .collect()
    }

    fn invoke_method(
        &mut self,
        hub: &str,
        device_id: &str,
        call: &DirectMethodCall,
        _now: OffsetDateTime,
    ) -> Result<DirectMethodResult> {
        self.rt.block_on(self.invoke_async(hub, device_id, call))
    }

    fn invoke_methods(
        &mut self,
        calls: &[(String, String, DirectMethodCall)],
        concurrency: usize,
        _now: OffsetDateTime,
    ) -> Vec<Result<DirectMethodResult>> {
        use futures::StreamExt;
        let this = &*self;
        let answers = futures::stream::iter(
            calls
                .iter()
                .map(|(hub, id, call)| this.invoke_async(hub, id, call)),
        )
        .buffered(concurrency.max(1))
        .collect::<Vec<_>>();
        self.rt.block_on(answers)
    }

    fn invoke_methods_each(
        &mut self,
        calls: &[(String, String, DirectMethodCall)],
        concurrency: usize,
        _now: OffsetDateTime,
        each: &mut dyn FnMut(usize, Result<DirectMethodResult>),
    ) {
        use futures::StreamExt;
        let this = &*self;
        let mut answers = futures::stream::iter(
            calls
                .iter()
                .enumerate()
                .map(|(i, (hub, id, call))| async move { (i, this.invoke_async(hub, id, call).await) }),
        )
        .buffer_unordered(concurrency.max(1));
        self.rt.block_on(async {
            while let Some((i, answer)) = answers.next().await {
                each(i, answer);
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(identity: &HubIdentity, device: &Device, bulk: bool) -> Value {
        serde_json::to_value(DeviceBody {
            identity,
            status: crate::backend::azure::kept_status(identity.status, Some(device.identity.status)),
            kept: &device.kept,
            etag: Some(&device.etag),
            bulk,
        })
        .unwrap()
    }

    #[test]
    fn an_update_keeps_what_certroll_does_not_manage() {
        let read = json!({
            "deviceId": "d1", "etag": "e1", "status": "enabled", "statusReason": "ok",
            "capabilities": {"iotEdge": true}, "deviceScope": "scope", "generationId": "g",
            "connectionState": "Disconnected", "cloudToDeviceMessageCount": 0,
            "authentication": {"type": "selfSigned", "x509Thumbprint": {"primaryThumbprint": "AA", "secondaryThumbprint": null},
                "symmetricKey": {"primaryKey": null, "secondaryKey": null}},
        });
        let text = serde_json::to_vec(&read).unwrap();
        let parsed: DeviceRead = serde_json::from_slice(&text).unwrap();
        let device = parsed.device("h", "d1", "e1".into());
        let mut identity = device.identity.clone();
        assert_eq!(identity.primary_thumbprint.as_deref(), Some("AA"));
        assert_eq!(identity.secondary_thumbprint, None);
        assert_eq!(
            (identity.status, identity.auth_type.as_str()),
            (Status::Enabled, "selfSigned")
        );
        identity.secondary_thumbprint = Some("BB".into());
        identity.status = Status::Disabled;
        let ours = |mut out: Value| {
            out["status"] = json!("disabled");
            out["authentication"] = json!({"type": "selfSigned",
                "x509Thumbprint": {"primaryThumbprint": "AA", "secondaryThumbprint": "BB"},
                "symmetricKey": {"primaryKey": null, "secondaryKey": null}});
            out
        };
        assert_eq!(body(&identity, &device, false), ours(read.clone()));
        assert_eq!(
            body(&identity, &device, true),
            ours(
                json!({"id": "d1", "eTag": "e1", "importMode": "updateIfMatchETag", "statusReason": "ok",
                "capabilities": {"iotEdge": true}, "deviceScope": "scope"})
            ),
            "a bulk entry has the ExportImportDevice names and no read-only members"
        );
        identity.auth_type = "certificateAuthority".into();
        let out = body(&identity, &device, true);
        assert_eq!(
            out["authentication"]["x509Thumbprint"],
            json!({"primaryThumbprint": null, "secondaryThumbprint": null})
        );
    }

    #[test]
    fn a_twin_from_the_registry_query_gives_the_identity_and_what_an_update_keeps() {
        let twins = r#"[{"deviceId": "d1", "moduleId": null, "etag": "twin-etag", "deviceEtag": "e1",
            "status": "enabled", "statusReason": null, "authenticationType": "selfSigned",
            "x509Thumbprint": {"primaryThumbprint": "AA", "secondaryThumbprint": ""},
            "capabilities": {"iotEdge": false}, "parentScopes": [], "version": 3,
            "tags": {"site": "lab"}, "properties": {"desired": {"$metadata": {}}, "reported": {}}},
            {"deviceId": "d2", "status": "enabled"}]"#;
        let twins: Vec<TwinRead> = serde_json::from_str(twins).unwrap();
        let device = device_of_twin("h", &twins[0]).unwrap();
        assert_eq!(device.etag, "e1", "the identity's etag, not the twin's");
        assert_eq!(device.identity.primary_thumbprint.as_deref(), Some("AA"));
        assert_eq!(
            device.identity.secondary_thumbprint, None,
            "an empty thumbprint is none"
        );
        assert_eq!(
            serde_json::to_value(device.kept.fields()).unwrap(),
            json!({"capabilities": {"iotEdge": false}, "parentScopes": []})
        );
        assert!(
            device_of_twin("h", &twins[1]).is_none(),
            "no deviceEtag: read by GET"
        );
    }
}
