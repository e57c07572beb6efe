//! The records the three services hold, as every backend speaks them.

use serde::Serialize;
use time::OffsetDateTime;

/// `enabled` / `disabled`, as DPS and IoT Hub spell a status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Accepted.
    Enabled,
    /// Refused.
    Disabled,
}

impl Status {
    /// The wire spelling.
    pub fn as_str(&self) -> &'static str {
        match self {
            Status::Enabled => "enabled",
            Status::Disabled => "disabled",
        }
    }

    /// Parses the wire spelling.
    pub fn parse(s: &str) -> Status {
        if s.eq_ignore_ascii_case("enabled") {
            Status::Enabled
        } else {
            Status::Disabled
        }
    }
}

/// The vault certificate name of a plan CA (`ca-NAME`). A naming rule every layer shares: the
/// verbs write these names, the azure backend and serve find a device's or a group's
/// certificate by them.
pub fn ca_cert_name(ca: &str) -> String {
    format!("ca-{ca}")
}

/// The vault certificate name of a device's leaf (`dev-ID`), as [`ca_cert_name`] is a CA's.
pub fn device_cert_name(device_id: &str) -> String {
    format!("dev-{device_id}")
}

/// One version of a vault certificate, without its key.
#[derive(Debug, Clone)]
pub struct VaultVersion {
    /// Certificate name.
    pub name: String,
    /// Version id (32 lowercase hex characters, as Key Vault writes them).
    pub version: String,
    /// The certificate (DER).
    pub cert_der: Vec<u8>,
    /// Key type as Key Vault names it (`EC`, `RSA-HSM`, ...).
    pub kty: String,
    /// Whether the key may be exported.
    pub exportable: bool,
    /// Version attribute `enabled`.
    pub enabled: bool,
    /// notBefore.
    pub nbf: OffsetDateTime,
    /// notAfter.
    pub exp: OffsetDateTime,
    /// When the version was created.
    pub created: OffsetDateTime,
    /// The vault certificate name and version that signed it (None for roots and imports).
    pub issuer: Option<(String, String)>,
}

impl VaultVersion {
    /// Why this version is never handed to a device (None: it may be): a disabled one (a later
    /// breach, a revoke or `vault update --disable` disabled it) never is, wherever a delivery
    /// is decided, a roll's resumed step and an owed delivery alike. Key Vault would refuse to
    /// read its key anyway (HTTP 403).
    pub fn never_delivered(&self) -> Option<String> {
        (!self.enabled).then(|| {
            format!(
                "certificate version {}/{} is disabled, so it is not delivered",
                self.name, self.version
            )
        })
    }
}

/// A new vault version to store, with its key.
pub struct NewVersion<'a> {
    /// Certificate name.
    pub name: &'a str,
    /// The policy, as JSON, recorded with the certificate when the name is new.
    pub policy_json: &'a str,
    /// The certificate (DER).
    pub cert_der: &'a [u8],
    /// The private key (PKCS#8 DER).
    pub key_pkcs8: &'a [u8],
    /// Key type name.
    pub kty: &'a str,
    /// Whether the key may be exported.
    pub exportable: bool,
    /// The vault certificate name and version that signed it.
    pub issuer: Option<(&'a str, &'a str)>,
    /// The certificate's thumbprint, serial and validity when the caller has them already (made
    /// on the cores that signed it); otherwise the store parses the DER.
    pub facts: Option<&'a crate::pki::CertFacts>,
    /// The key was generated for this version: no earlier version can hold it, so the vault
    /// need not look for one whose protection (non-exportable, HSM) it would inherit. False
    /// for a key that may have been used before (reused, imported, merged).
    pub new_key: bool,
}

/// A CA certificate held by the enrollment service (DPS "certificates").
#[derive(Debug, Clone)]
pub struct ServiceCa {
    /// Its name in the service.
    pub name: String,
    /// The certificate (DER).
    pub cert_der: Vec<u8>,
    /// SHA-1 thumbprint.
    pub thumbprint: String,
    /// Whether proof of possession succeeded.
    pub verified: bool,
}

/// One attestation slot: a certificate, optionally as a reference to a service CA.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Slot {
    /// The certificate (DER).
    pub cert_der: Vec<u8>,
    /// For a group pointing at a verified service CA: that CA's name.
    pub ca_reference: Option<String>,
}

/// An enrollment group.
#[derive(Debug, Clone)]
pub struct EnrollmentGroup {
    /// Group id.
    pub name: String,
    /// Primary signing certificate.
    pub primary: Option<Slot>,
    /// Secondary signing certificate.
    pub secondary: Option<Slot>,
    /// Enabled or disabled.
    pub status: Status,
    /// migrate / reset / never.
    pub reprovision: String,
    /// Hub devices are assigned to.
    pub hub: String,
    /// CA certificates another client (the Azure portal, a script, a migration) put into a
    /// signing slot, which certroll did not issue and cannot resolve: that slot reads as `None`
    /// above, yet is not empty. Reads fill it (the local store never holds one: always empty).
    /// A write keeps such a slot as it is when it leaves it `None`; it is replaced or removed
    /// only when [`take_back`](Self::take_back) is set, and any other write over it is refused.
    pub foreign: Vec<ForeignCertificate>,
    /// Set only by an explicit breach of this group (`roll-primary --breach group:NAME`): the
    /// write replaces or removes the [`foreign`](Self::foreign) certificates it read.
    pub take_back: bool,
}

/// An individual enrollment.
#[derive(Debug, Clone)]
pub struct IndividualEnrollment {
    /// Registration id.
    pub registration_id: String,
    /// Primary client certificate.
    pub primary: Option<Vec<u8>>,
    /// Secondary client certificate.
    pub secondary: Option<Vec<u8>>,
    /// Enabled or disabled.
    pub status: Status,
    /// migrate / reset / never.
    pub reprovision: String,
    /// Hub the device is assigned to.
    pub hub: String,
    /// Certificates another client (the Azure portal, a script) put into a slot, which certroll
    /// did not issue and cannot resolve: that slot reads as `None` above, yet is not empty.
    /// Reads fill it (the local store never holds one: always empty). On a write, a slot DPS
    /// holds with one of these is replaced only when [`take_back`](Self::take_back) is set;
    /// otherwise the write is refused, so no roll overwrites it blindly.
    pub foreign: Vec<ForeignCertificate>,
    /// Set by an explicit breach of this enrollment (`roll-primary --breach enrollment:ID`):
    /// the write replaces the [`foreign`](Self::foreign) certificates it read.
    pub take_back: bool,
}

/// A certificate in a slot of an individual enrollment or an enrollment group that certroll did
/// not issue (no vault certificate has its thumbprint), as the enrollment service describes it
/// (DPS's `X509CertificateInfo`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ForeignCertificate {
    /// `primary` or `secondary`.
    pub slot: &'static str,
    /// SHA-1 thumbprint, uppercase hex.
    pub thumbprint: String,
    /// Subject, as the service writes it (`CN=ib-10`); empty when it gives none.
    pub subject: String,
    /// Issuer's distinguished name, as the service writes it (DPS's `issuerName`); empty when
    /// it gives none. The service does not give the certificate itself, so this name (matched
    /// against the vault's CA certificates by [`crate::pki::inspect::dn_names`]) is all that
    /// tells which CA signed it.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub issuer: String,
    /// notBefore, when the service gives it.
    #[serde(
        with = "time::serde::rfc3339::option",
        skip_serializing_if = "Option::is_none"
    )]
    pub not_before: Option<OffsetDateTime>,
    /// notAfter, when the service gives it.
    #[serde(
        with = "time::serde::rfc3339::option",
        skip_serializing_if = "Option::is_none"
    )]
    pub not_after: Option<OffsetDateTime>,
}

impl ForeignCertificate {
    /// What an operator does about it, in words: the one certroll verb that takes the
    /// enrollment back.
    pub fn remedy(registration_id: &str) -> String {
        format!(
            "to take the enrollment back, run `certroll roll-primary --breach enrollment:{registration_id}` \
             (a new certificate replaces it); or put certroll's certificate back in that slot"
        )
    }

    /// One line naming it: `certificate THUMB (SUBJECT) in the primary slot of individual
    /// enrollment `ID`, which certroll did not issue`.
    pub fn describe(&self, registration_id: &str) -> String {
        format!(
            "another client put certificate {} ({}) into the {} slot of individual enrollment `{registration_id}`; certroll did not issue it and leaves the enrollment alone",
            self.thumbprint,
            self.subject_or_none(),
            self.slot
        )
    }

    /// The subject, or words saying the service gave none.
    fn subject_or_none(&self) -> &str {
        if self.subject.is_empty() {
            "no subject given"
        } else {
            &self.subject
        }
    }

    /// As [`describe`](Self::describe), for a signing certificate of enrollment group `group`.
    pub fn describe_in_group(&self, group: &str) -> String {
        format!(
            "another client put CA certificate {} ({}) into the {} signing slot of enrollment group `{group}`; \
             certroll did not issue it and does not write the group while it is there",
            self.thumbprint,
            self.subject_or_none(),
            self.slot
        )
    }

    /// What an operator does about another client's certificate in enrollment group `group`:
    /// take the group back with the explicit breach of the group (a new version of its CA
    /// replaces it), or have it removed where it was put. `no_take_back` says why the group
    /// cannot have a breach of its own (its signing CA is a root, or signs for other groups),
    /// leaving only the removal.
    pub fn group_remedy(group: &str, no_take_back: Option<&str>) -> String {
        let remove = "remove it from the group where it was put (the Azure portal, or DPS's API), \
                      then run the certroll command again";
        match no_take_back {
            None => format!(
                "to take the group back, run `certroll roll-primary --breach group:{group}` (a new version \
                 of its CA replaces it); or {remove}"
            ),
            Some(why) => format!(
                "{remove} (certroll cannot take the group back alone: {why}; if it was issued under one of the \
                 plan's CAs, the breach of that CA, `certroll roll-primary --breach ca:NAME`, takes the group back)"
            ),
        }
    }
}

/// Fills the primary slot first, as the Device Provisioning Service requires: a lone certificate
/// (the secondary's, when the primary was emptied) moves to the primary slot. DPS refuses an
/// enrollment or group with a secondary and no primary (HTTP 400 400004), so every write goes
/// through this; returns whether it moved anything.
pub fn primary_first<T>(primary: &mut Option<T>, secondary: &mut Option<T>) -> bool {
    if primary.is_none() && secondary.is_some() {
        *primary = secondary.take();
        return true;
    }
    false
}

/// Why the enrollment service refuses to hold this pair of slots (a secondary without a
/// primary, as DPS answers it: `field` is DPS's attestation field name), or `None`.
pub fn slots_refused<T>(
    kind: &str,
    name: &str,
    field: &str,
    primary: &Option<T>,
    secondary: &Option<T>,
) -> Option<String> {
    (primary.is_none() && secondary.is_some()).then(|| {
        format!(
            "{kind} `{name}` would hold a secondary certificate and no primary; the enrollment \
             service requires {field}.primary (DPS: HTTP 400 400004)"
        )
    })
}

impl EnrollmentGroup {
    /// [`primary_first`] on the group's signing certificates.
    pub fn primary_first(&mut self) -> bool {
        primary_first(&mut self.primary, &mut self.secondary)
    }

    /// [`slots_refused`] for the group.
    pub fn slots_refused(&self) -> Option<String> {
        slots_refused(
            "enrollment group",
            &self.name,
            "attestation.x509.signingCertificates",
            &self.primary,
            &self.secondary,
        )
    }
}

impl IndividualEnrollment {
    /// [`primary_first`] on the enrollment's client certificates.
    pub fn primary_first(&mut self) -> bool {
        primary_first(&mut self.primary, &mut self.secondary)
    }

    /// [`slots_refused`] for the enrollment.
    pub fn slots_refused(&self) -> Option<String> {
        slots_refused(
            "individual enrollment",
            &self.registration_id,
            "attestation.x509.clientCertificates",
            &self.primary,
            &self.secondary,
        )
    }
}

/// What the enrollment service recorded for a device's last registration attempt (DPS's
/// `DeviceRegistrationState`).
#[derive(Debug, Clone, Default, Serialize)]
pub struct RegistrationState {
    /// Registration id.
    #[serde(skip)]
    pub registration_id: String,
    /// The last attempt: `assigned`, `failed` (no enrollment accepts the certificate) or
    /// `disabled` (an enrollment that holds it is disabled).
    pub status: String,
    /// initialAssignment, deviceDataMigrated, deviceDataReset, reprovisionedToInitialAssignment
    /// (only with `assigned`).
    pub substatus: Option<String>,
    /// The hub of the last successful assignment; a later failed attempt leaves it in place (the
    /// device's identity is still there), as DPS shows it.
    pub hub: Option<String>,
    /// The thumbprint of the certificate the device registered with.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cert_thumbprint: Option<String>,
    /// Why the last attempt failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// DPS's error code of the last attempt (HTTP status x 1000 + sub-code; see
    /// [`registration::error_code`](super::registration::error_code)).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error_code: Option<i64>,
    /// `group` or `individual`: the kind of enrollment of the last successful assignment.
    #[serde(skip)]
    pub enrollment_kind: Option<String>,
    /// The name of that enrollment (the enrollment group id for a group).
    #[serde(skip)]
    pub enrollment_name: Option<String>,
    /// When the device first registered (None until stored).
    #[serde(skip)]
    pub created: Option<OffsetDateTime>,
    /// When the last attempt was recorded (None until stored).
    #[serde(
        rename = "last_updated",
        with = "time::serde::rfc3339::option",
        skip_serializing_if = "Option::is_none"
    )]
    pub updated: Option<OffsetDateTime>,
    /// Opaque etag, changed on every write (None until stored).
    #[serde(skip)]
    pub etag: Option<String>,
    /// The hub device id of the last successful assignment when it is not the registration id
    /// (an individual enrollment's `deviceId`, given through `certroll serve`'s DPS API).
    #[serde(skip)]
    pub device_id: Option<String>,
}

/// A device identity in the hub registry.
#[derive(Debug, Clone, Serialize)]
pub struct HubIdentity {
    /// Hub name.
    #[serde(skip)]
    pub hub: String,
    /// Device id.
    #[serde(skip)]
    pub device_id: String,
    /// Enabled or disabled.
    pub status: Status,
    /// `selfSigned` (thumbprints) or `certificateAuthority`.
    pub auth_type: String,
    /// Primary thumbprint.
    pub primary_thumbprint: Option<String>,
    /// Secondary thumbprint.
    pub secondary_thumbprint: Option<String>,
}

/// A direct method to invoke on a device through its hub (IoT Hub's
/// `POST /twins/{id}/methods` body).
#[derive(Debug, Clone, PartialEq)]
pub struct DirectMethodCall {
    /// The method name the device registered (`reprovision`, ...).
    pub method_name: String,
    /// The JSON payload handed to the device (any JSON value; `null` for none).
    pub payload: serde_json::Value,
    /// How long the hub waits for the device's answer, in seconds (IoT Hub allows 5 to 300).
    pub response_timeout_secs: u32,
}

/// What a device answered to a direct method, as IoT Hub returns it: the device's own status
/// code and JSON payload. A device that is unknown or not connected is an error instead
/// ([`BackendError::Remote`](super::BackendError::Remote) with IoT Hub's `DeviceNotFound` or
/// `DeviceNotOnline`).
#[derive(Debug, Clone, PartialEq)]
pub struct DirectMethodResult {
    /// The status the device returned (its own code, HTTP-like: 200 done, 501 unknown method).
    pub status: i32,
    /// The device's JSON payload.
    pub payload: serde_json::Value,
}

/// A device and the certificate installed on it.
#[derive(Debug, Clone)]
pub struct DeviceRecord {
    /// Device id (= registration id = CN).
    pub id: String,
    /// The group it belongs to, if any.
    pub group: Option<String>,
    /// The individual enrollment it belongs to, if any.
    pub enrollment: Option<String>,
    /// The vault certificate name of its leaf.
    pub cert_name: String,
    /// The vault version installed on the device, if any.
    pub installed_version: Option<String>,
}

/// A device presenting its certificate to the enrollment service.
#[derive(Debug, Clone)]
pub struct RegistrationRequest {
    /// Registration id.
    pub registration_id: String,
    /// The presented chain, leaf first.
    pub chain: Vec<Vec<u8>>,
}

/// One certificate on a CA's revocation list.
#[derive(Debug, Clone)]
pub struct Revocation {
    /// Serial, uppercase hex.
    pub serial: String,
    /// RFC 5280 reason name (key-compromise, superseded, ...).
    pub reason: String,
    /// When it was revoked.
    pub revoked_at: OffsetDateTime,
}

/// A version without its certificate and key: what a roll decides from, cheap to read for a
/// whole fleet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VersionBrief {
    /// Certificate name.
    pub name: String,
    /// Version id.
    pub version: String,
    /// SHA-1 thumbprint (uppercase hex).
    pub thumbprint: String,
    /// Usable.
    pub enabled: bool,
    /// notBefore.
    pub nbf: OffsetDateTime,
    /// notAfter.
    pub exp: OffsetDateTime,
    /// The vault certificate name and version that signed it (None for roots and imports): a
    /// roll compares it with the CA version it targets.
    pub issuer: Option<(String, String)>,
}

/// One version as a vault's listing of versions shows it, without the certificate: what
/// `notify` needs to find renewals on a remote vault in one request per certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VersionStamp {
    /// Version id.
    pub version: String,
    /// When the vault made it (the vault's clock).
    pub created: OffsetDateTime,
    /// notAfter.
    pub exp: OffsetDateTime,
}

/// One certificate as a vault's listing of certificates shows it: its newest version's
/// thumbprint and attributes, without the certificate, the version id or the policy (Key Vault's
/// `GET /certificates`, 25 a request). Lets `notify` read a certificate again only when its newest
/// version changed. A field the listing left out is None.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListedCertificate {
    /// Certificate name.
    pub name: String,
    /// The newest version's SHA-1 thumbprint, uppercase hex (Key Vault's `x5t`, decoded).
    pub thumbprint: Option<String>,
    /// Whether the newest version is enabled.
    pub enabled: Option<bool>,
    /// The newest version's notBefore.
    pub nbf: Option<OffsetDateTime>,
    /// The newest version's notAfter.
    pub exp: Option<OffsetDateTime>,
}

/// Where the enrollment service would assign a device, and under which reprovision policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Assignment {
    /// The hub.
    pub hub: String,
    /// migrate, reset or never.
    pub reprovision: String,
}

/// One step of a journaled run.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct JournalStep {
    /// Position in the run, from 1.
    pub seq: u32,
    /// What the step acts on (`group:sensors`, `device:gw-01`).
    pub target: String,
    /// What kind of step (`renew-ca`, `group-slot`, `devices`, ...).
    pub kind: String,
    /// The step in words, as a dry run prints it.
    pub description: String,
    /// What was decided when the step was planned (JSON).
    pub detail: serde_json::Value,
    /// What the step did, once done (JSON).
    pub result: Option<serde_json::Value>,
}

/// A journaled run of a mutating command.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct JournalRun {
    /// The run's number.
    pub id: i64,
    /// The command, canonical.
    pub command: String,
    /// When it started.
    #[serde(with = "time::serde::rfc3339")]
    pub started: OffsetDateTime,
    /// When it finished (None while open).
    #[serde(with = "time::serde::rfc3339::option")]
    pub finished: Option<OffsetDateTime>,
    /// Its steps, in order.
    pub steps: Vec<JournalStep>,
}

// ---------------------------------------------------------------- vault administration

/// Tags of a certificate or of a version: names to values, in name order.
pub type Tags = std::collections::BTreeMap<String, String>;

/// A soft-deleted certificate (Key Vault's `DeletedCertificateItem`).
#[derive(Debug, Clone)]
pub struct DeletedCertificate {
    /// The name.
    pub name: String,
    /// When it was deleted.
    pub deleted: OffsetDateTime,
    /// When it may be purged for good (deleted + recovery days).
    pub scheduled_purge: OffsetDateTime,
    /// Its tags.
    pub tags: Tags,
    /// Its versions, oldest first.
    pub versions: Vec<VaultVersion>,
}

/// What else in the store relies on a certificate: checked before it is deleted.
#[derive(Debug, Clone, Default)]
pub struct CertificateUsers {
    /// Devices that hold one of its versions.
    pub devices: Vec<String>,
    /// Other certificates with a version signed by one of its versions.
    pub signed: Vec<String>,
}

/// The private key of a version in a backup.
pub enum BackupKey {
    /// An exportable key, in clear (PKCS#8 DER); the backup file encrypts it.
    Plain(zeroize::Zeroizing<Vec<u8>>),
    /// A non-exportable key, still sealed under the store key: it opens only in a store with
    /// the same store key, and never in clear outside the store.
    Sealed(Vec<u8>),
}

/// One version in a backup: everything the store holds about it.
pub struct VersionBackup {
    /// The version, without its key.
    pub version: VaultVersion,
    /// The key.
    pub key: BackupKey,
    /// When its attributes last changed.
    pub updated: OffsetDateTime,
    /// Its tags.
    pub tags: Tags,
    /// The chain stored with it (imports and merges), issuer first.
    pub chain: Vec<Vec<u8>>,
}

/// A certificate with all its versions, policy and tags, as `vault backup` carries it.
pub struct CertificateBackup {
    /// The name.
    pub name: String,
    /// The policy JSON, as stored.
    pub policy_json: String,
    /// The certificate's tags.
    pub tags: Tags,
    /// When the name was created.
    pub created: OffsetDateTime,
    /// When it last changed.
    pub updated: OffsetDateTime,
    /// The versions, oldest first.
    pub versions: Vec<VersionBackup>,
}

/// An issuer object (Key Vault's `IssuerBundle`, without credentials' password).
#[derive(Debug, Clone, Serialize)]
pub struct IssuerConfig {
    /// The issuer's name, which policies refer to.
    pub name: String,
    /// The provider (`DigiCert`, `GlobalSign`, `OneCertV2-PublicCA`, ...).
    pub provider: String,
    /// The account at the provider.
    pub account_id: Option<String>,
    /// Whether it is enabled.
    pub enabled: bool,
    /// When it was set first.
    #[serde(with = "time::serde::rfc3339")]
    pub created: OffsetDateTime,
    /// When it was set last.
    #[serde(with = "time::serde::rfc3339")]
    pub updated: OffsetDateTime,
}

/// A certificate request waiting for an outside CA to sign it.
#[derive(Debug, Clone)]
pub struct PendingCertificate {
    /// The certificate name.
    pub name: String,
    /// The request id.
    pub request_id: String,
    /// The CSR (PKCS#10 DER).
    pub csr_der: Vec<u8>,
    /// Key type name.
    pub kty: String,
    /// Whether the key may be exported once merged.
    pub exportable: bool,
    /// The policy the merged version records.
    pub policy_json: String,
    /// The issuer named in the policy (`Unknown` or an issuer object).
    pub issuer: String,
    /// When it was requested; None when the vault does not say (Key Vault's operation carries
    /// no time: certroll reads it from the policy the create wrote).
    pub created: Option<OffsetDateTime>,
}

impl PendingCertificate {
    /// The vault version merging `leaf` into this request makes: its name, policy, key type
    /// and exportability, with the request's key (`key_pkcs8`, PKCS#8 DER) and the vault
    /// certificate name and version that signed `leaf` (`issuer`). The key was the request's
    /// before the merge, so it is not new (`new_key: false`).
    pub fn merged<'a>(
        &'a self,
        leaf: &'a [u8],
        key_pkcs8: &'a [u8],
        issuer: Option<(&'a str, &'a str)>,
    ) -> NewVersion<'a> {
        NewVersion {
            name: &self.name,
            policy_json: &self.policy_json,
            cert_der: leaf,
            key_pkcs8,
            kty: &self.kty,
            exportable: self.exportable,
            issuer,
            facts: None,
            new_key: false,
        }
    }
}

/// Why device `id`, which the plan gives an individual enrollment of its own and certroll
/// issued, cannot connect when the enrollment service holds no such enrollment: someone else
/// deleted it (certroll deletes none), and no roll creates one it did not find. It lives
/// below `ops` because the azure backend's write that lost its race to the delete says it too.
pub(crate) fn deleted_by_another(id: &str) -> String {
    format!(
        "its individual enrollment `{id}` is not in DPS: another client of DPS deleted it, so DPS refuses \
         its registrations and certroll's rolls leave it alone. `certroll issue enrollment:{id}` creates it \
         again with the certificate certroll issued the device (or remove `[enrollments.{id}]` from the plan \
         if the device is gone)"
    )
}
