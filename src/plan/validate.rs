//! Checks a [`RawPlan`] and builds the validated [`Plan`].
//!
//! Every check runs and records its error with the position it points at; the error that comes
//! first in the plan file is returned, so the answer is deterministic and does not depend on the
//! order the checks run in. Errors inside a device list are ordered at the list's `file` value,
//! then by line. Checks that need another value to be valid (a cycle check needs the issuer to
//! exist) skip what an earlier check already rejected, so one mistake gives one error.

use super::raw::{Named, RawBackend, RawCa, RawDevices, RawEnrollment, RawKey, RawPlan, RawPolicy};
use super::{
    ActionKind, AzureConfig, BackendConfig, CaSpec, ContentType, DeviceSource, EnrollmentSpec, GroupSpec,
    LifetimeAction, Plan, PlanError, Policy, ReprovisionPolicy, Trigger, line_column,
};
use crate::pki::spec::{Curve, ExtendedKeyUsage, KeySpec, KeyUsage, RSA_SIZES, Subject};
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::ops::Range;
use std::path::{Path, PathBuf};
use toml::Spanned;

// `[mail]` and `[hooks]`.
#[path = "validate_notify.rs"]
mod notify;
// `[serve]`.
#[path = "validate_serve.rs"]
mod serve;
// `[backend] kind = "azure"`.
#[path = "validate_azure.rs"]
mod azure;

#[path = "validate_delivery.rs"]
mod delivery;

/// The plan format version this build reads.
const VERSION: i64 = 1;
/// Longest policy, CA, group or enrollment name (Key Vault's certificate name limit).
const MAX_NAME_LEN: usize = 100;
/// Longest device (registration) id (DPS's limit).
const MAX_DEVICE_ID_LEN: usize = 128;
/// Longest validity a policy may ask for (about a century).
const MAX_VALIDITY_DAYS: i64 = 36_500;
/// Most devices a generated group may declare.
const MAX_GROUP_COUNT: i64 = 10_000_000;
/// The store file when `[backend]` names none.
const DEFAULT_STORE_PATH: &str = ".certroll/state.db";

/// The error for a missing or unsupported `version`, if any: a plan of another version may mean
/// anything else, so this comes before every other check.
pub(super) fn version_error(
    path: &Path,
    text: &str,
    version: Option<&Spanned<i64>>,
    missing: bool,
) -> Option<PlanError> {
    if missing {
        return Some(PlanError::whole_file(
            path,
            format!("missing `version = {VERSION}` (the plan format version)"),
        ));
    }
    let v = version.filter(|v| *v.get_ref() != VERSION)?;
    Some(PlanError::at_span(
        path,
        text,
        Some(v.span()),
        format!(
            "unsupported plan version {} (this certroll reads version {VERSION})",
            v.get_ref()
        ),
    ))
}

/// Validates `raw`, read from `path` with contents `text`: the plan, or every error found with
/// where it sits (the caller reports the first in the file).
pub(super) fn validate(path: &Path, text: &str, raw: RawPlan) -> Result<Plan, Vec<(Order, PlanError)>> {
    if let Some(e) = version_error(path, text, raw.version.as_ref(), raw.version.is_none()) {
        return Err(vec![((0, 0), e)]);
    }

    let parent = path.parent().unwrap_or(Path::new(""));
    let folder = if parent.as_os_str().is_empty() {
        Path::new(".")
    } else {
        parent
    };
    let base = std::path::absolute(folder).map_err(|e| {
        vec![(
            (0, 0),
            PlanError::whole_file(
                path,
                format!("cannot resolve the plan's folder `{}`: {e}", folder.display()),
            ),
        )]
    })?;

    let mut v = Validator {
        path,
        text,
        base,
        shown_base: parent,
        errors: Vec::new(),
        places: BTreeMap::new(),
        azure: false,
    };
    let plan = v.plan(&raw);
    if v.errors.is_empty() {
        Ok(plan.expect("a plan is built whenever no error was recorded"))
    } else {
        Err(v.errors)
    }
}

/// Where an error sits, for ordering: byte offset in the plan, then line in a device list.
pub(super) type Order = (usize, usize);

/// The state of one validation: the plan's text, its folder, and the errors found so far.
struct Validator<'a> {
    path: &'a Path,
    text: &'a str,
    /// The plan's folder, absolute: relative paths in the plan are resolved against it.
    base: PathBuf,
    /// The plan's folder as the user spelled it, for naming device lists in messages.
    shown_base: &'a Path,
    errors: Vec<(Order, PlanError)>,
    /// Where the keys a later error names are written ([`crate::plan::AzureConfig::places`]).
    places: BTreeMap<String, crate::plan::PlanPlace>,
    /// `[backend] kind = "azure"`: devices get their keys delivered, so a device policy's key
    /// must be one certroll makes and hands over.
    azure: bool,
}

/// The entries of a named table in file order (serde hands them over in name order).
fn in_file_order<T>(table: &Named<T>) -> Vec<(&Spanned<String>, &T)> {
    let mut entries: Vec<_> = table.iter().collect();
    entries.sort_by_key(|(name, _)| name.span().start);
    entries
}

/// Whether `s` is non-empty and only ASCII letters, digits and `-` (Key Vault names, DPS ids).
fn is_id(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
}

/// `a, b, c` of a list of names, or `none` when empty.
fn list(names: impl IntoIterator<Item = impl AsRef<str>>) -> String {
    let names: Vec<String> = names.into_iter().map(|n| n.as_ref().to_string()).collect();
    if names.is_empty() {
        "none".to_string()
    } else {
        names.join(", ")
    }
}

/// What a policy's raw `key_usage` says about signing certificates.
struct UsageFacts {
    /// The list is not empty (so the defaults do not apply).
    explicit: bool,
    /// keyCertSign is in the list.
    key_cert_sign: bool,
    /// The key type when the policy's key is not exportable (`EC-HSM`, or `EC` with
    /// `exportable = false`); None when it is exportable or the policy is invalid.
    kept: Option<String>,
}

impl<'a> Validator<'a> {
    /// Records where the plan writes `key` (the start of `span`).
    fn place(&mut self, key: impl Into<String>, span: Range<usize>) {
        let (line, column) = line_column(self.text, span.start);
        let place = crate::plan::PlanPlace {
            path: self.path.to_path_buf(),
            line,
            column,
        };
        self.places.insert(key.into(), place);
    }

    /// Records an error at the start of `span` in the plan.
    fn error(&mut self, span: Range<usize>, message: impl Into<String>) {
        self.error_ordered(span.start, span, message);
    }

    /// Records an error at the start of `span`, ordered among the plan's errors at byte `order`.
    fn error_ordered(&mut self, order: usize, span: Range<usize>, message: impl Into<String>) {
        let (line, column) = line_column(self.text, span.start);
        let error = PlanError {
            path: self.path.to_path_buf(),
            line: Some(line),
            column: Some(column),
            message: message.into(),
        };
        self.errors.push(((order, 0), error));
    }

    /// Records an error about a key missing from the table that holds `span`, pointing at
    /// `span` (the key that needs it) but ordered at the end of that table, as the schema orders
    /// a missing key: a key misspelt in the table (an unknown key) is the first thing to say.
    fn error_missing(&mut self, span: Range<usize>, message: impl Into<String>) {
        let order = super::schema::table_end_around(self.text, span.start).unwrap_or(span.start);
        self.error_ordered(order, span, message);
    }

    /// Records an error about a key missing from the table at `table` (its value's span),
    /// pointing at that table but ordered at its end, as [`error_missing`](Self::error_missing)
    /// is ordered at the end of the table holding the key that needs one.
    fn error_missing_from(&mut self, table: Range<usize>, message: impl Into<String>) {
        let order = super::schema::table_end_of(self.text, &table).unwrap_or(table.start);
        self.error_ordered(order, table, message);
    }

    /// Records an error at `line` of the device list `shown` (named at `anchor` in the plan).
    fn error_in_list(&mut self, anchor: usize, shown: &Path, line: usize, message: String) {
        let error = PlanError {
            path: shown.to_path_buf(),
            line: Some(line),
            column: Some(1),
            message,
        };
        self.errors.push(((anchor, line), error));
    }

    /// `rel` resolved against the plan's folder, made absolute.
    fn resolve(&self, rel: &str) -> PathBuf {
        let joined = self.base.join(rel);
        std::path::absolute(&joined).unwrap_or(joined)
    }

    /// Checks a policy, CA, group or enrollment name (`what` says which).
    fn check_name(&mut self, what: &str, name: &Spanned<String>) {
        let s = name.get_ref();
        if !is_id(s) {
            self.error(
                name.span(),
                format!("{what} name `{s}` is not valid: use only letters, digits and `-`"),
            );
        } else if s.len() > MAX_NAME_LEN {
            self.error(
                name.span(),
                format!(
                    "{what} name `{s}` is {} characters long; the limit is {MAX_NAME_LEN}",
                    s.len()
                ),
            );
        }
    }

    /// Checks that `reference` names one of `defined` (`what`: "policy", "CA").
    fn check_ref<T>(
        &mut self,
        what: &str,
        plural: &str,
        reference: &Spanned<String>,
        defined: &Named<T>,
    ) -> bool {
        let name = reference.get_ref();
        if defined.keys().any(|k| k.get_ref() == name) {
            return true;
        }
        let message = if defined.is_empty() {
            format!("{what} `{name}` is not defined (the plan defines no {plural})")
        } else {
            format!(
                "{what} `{name}` is not defined (defined: {})",
                list(defined.keys().map(|k| k.get_ref()))
            )
        };
        self.error(reference.span(), message);
        false
    }

    /// Checks an IoT hub name.
    fn check_hub(&mut self, hub: &Spanned<String>) {
        let s = hub.get_ref();
        let ok = !s.is_empty()
            && s.len() <= 253
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
            && !s.starts_with(['-', '.'])
            && !s.ends_with(['-', '.']);
        if !ok {
            self.error(
                hub.span(),
                format!(
                    "hub `{s}` is not a hub host name (letters, digits, `-` and `.`, \
                     e.g. `example-hub` or `example-hub.azure-devices.net`)"
                ),
            );
        }
    }

    /// Parses a `reprovision` value (default migrate).
    fn reprovision(&mut self, raw: Option<&Spanned<String>>) -> ReprovisionPolicy {
        let Some(raw) = raw else {
            return ReprovisionPolicy::Migrate;
        };
        ReprovisionPolicy::parse(raw.get_ref()).unwrap_or_else(|| {
            self.error(
                raw.span(),
                format!(
                    "unknown reprovision policy `{}` (expected migrate, reset or never)",
                    raw.get_ref()
                ),
            );
            ReprovisionPolicy::Migrate
        })
    }

    /// `not_before_skew_minutes`: 0 to a day.
    fn not_before_skew(&mut self, raw: &RawPlan) -> time::Duration {
        let minutes = match &raw.not_before_skew_minutes {
            None => Plan::DEFAULT_SKEW_MINUTES,
            Some(m) if (0..=Plan::MAX_SKEW_MINUTES).contains(m.get_ref()) => *m.get_ref(),
            Some(m) => {
                self.error(
                    m.span(),
                    format!(
                        "not_before_skew_minutes = {} is out of range (0 to {}: how many minutes before the moment of issue a certificate starts)",
                        m.get_ref(),
                        Plan::MAX_SKEW_MINUTES
                    ),
                );
                Plan::DEFAULT_SKEW_MINUTES
            }
        };
        time::Duration::minutes(minutes)
    }

    /// Checks the whole plan; returns it when no error was recorded.
    fn plan(&mut self, raw: &RawPlan) -> Option<Plan> {
        let backend = self.backend(raw.backend.as_ref());
        self.azure = backend.as_ref().is_some_and(|b| b.1.is_some());
        let contacts = self.contacts(raw);

        let mut usage = HashMap::new();
        let mut policies = BTreeMap::new();
        for (name, policy) in in_file_order(&raw.policies) {
            self.check_name("policy", name);
            let kus: Vec<&str> = policy.key_usage.iter().map(|u| u.get_ref().as_str()).collect();
            usage.insert(
                name.get_ref().as_str(),
                UsageFacts {
                    explicit: !kus.is_empty(),
                    key_cert_sign: kus.contains(&"keyCertSign"),
                    kept: None,
                },
            );
            if let Some(p) = self.policy(name, policy) {
                if !p.exportable
                    && let Some(u) = usage.get_mut(name.get_ref().as_str())
                {
                    u.kept = Some(p.key.kty().to_string());
                }
                policies.insert(name.get_ref().clone(), p);
            }
        }

        let not_before_skew = self.not_before_skew(raw);
        let (mail, hooks) = (self.mail(raw), self.hooks(raw));
        let serve = self.serve(raw);
        let delivery = self.delivery_plan(raw);
        let cas = self.cas(raw, &usage);
        let groups = self.groups(raw, &usage);
        let enrollments = self.enrollments(raw, &usage);
        if let (Some(groups), Some(enrollments)) = (&groups, &enrollments) {
            self.unique_device_ids(raw, groups, enrollments);
        }

        if !self.errors.is_empty() {
            return None;
        }
        Some(Plan {
            path: self.path.to_path_buf(),
            backend: backend.as_ref()?.0.clone(),
            azure: backend?.1.map(|mut azure| {
                azure.places = std::mem::take(&mut self.places);
                azure
            }),
            contacts,
            policies,
            cas: cas?,
            groups: groups?
                .into_iter()
                .map(|(name, (spec, _))| (name, spec))
                .collect(),
            enrollments: enrollments?
                .into_iter()
                .map(|(name, (spec, _))| (name, spec))
                .collect(),
            mail,
            hooks,
            serve,
            not_before_skew,
            delivery,
        })
    }

    /// `[backend]`: the local store (always: it keeps the fleet record and the journal), and
    /// for `kind = "azure"` the remote services.
    fn backend(&mut self, raw: Option<&RawBackend>) -> Option<(BackendConfig, Option<AzureConfig>)> {
        let (kind, path, key_file) = match raw {
            Some(b) => (b.kind.as_ref(), b.path.as_ref(), b.key_file.as_ref()),
            None => (None, None, None),
        };
        let mut azure_config = None;
        if let (Some(kind), Some(b)) = (kind, raw) {
            match kind.get_ref().as_str() {
                "local" => {}
                "azure" => azure_config = Some(self.azure(b, kind.span())?),
                k @ "openbao" => {
                    self.error(
                        kind.span(),
                        format!(
                            "backend kind `{k}` is not available in this version; use `local` or `azure`"
                        ),
                    );
                    return None;
                }
                k => {
                    self.error(
                        kind.span(),
                        format!("unknown backend kind `{k}` (this version supports `local` and `azure`)"),
                    );
                    return None;
                }
            }
        }
        if azure_config.is_none()
            && let Some(b) = raw
        {
            for (key, span) in azure::azure_only_keys(b) {
                self.error(
                    span,
                    format!("backend `{key}` applies only to `kind = \"azure\"`"),
                );
            }
        }
        let path = match path {
            Some(p) => self.store_file("path", p),
            None => self.resolve(DEFAULT_STORE_PATH),
        };
        let key_file = key_file.map(|k| self.store_file("key_file", k));
        Some((BackendConfig::Local { path, key_file }, azure_config))
    }

    /// A file named in `[backend]`, resolved against the plan's folder.
    fn store_file(&mut self, what: &str, value: &Spanned<String>) -> PathBuf {
        if value.get_ref().trim().is_empty() {
            self.error(value.span(), format!("backend `{what}` is empty; name a file"));
        }
        self.resolve(value.get_ref())
    }

    /// `[contacts]`: e-mail addresses.
    fn contacts(&mut self, raw: &RawPlan) -> Vec<String> {
        let Some(contacts) = &raw.contacts else {
            return Vec::new();
        };
        for email in &contacts.emails {
            let s = email.get_ref();
            if crate::pki::san::San::email(s).is_err() {
                self.error(email.span(), format!("contact `{s}` is not an e-mail address"));
            }
        }
        contacts.emails.iter().map(|e| e.get_ref().clone()).collect()
    }

    /// `[policies.NAME]`; `None` if it has an error.
    fn policy(&mut self, name: &Spanned<String>, raw: &RawPolicy) -> Option<Policy> {
        let before = self.errors.len();
        let (key, exportable) = self.key(raw.key.get_ref());

        let validity = raw.validity_days.get_ref();
        let validity_days = match u32::try_from(*validity) {
            Ok(days) if (1..=MAX_VALIDITY_DAYS).contains(validity) => Some(days),
            _ => {
                self.error(
                    raw.validity_days.span(),
                    format!("validity_days = {validity} is out of range (1 to {MAX_VALIDITY_DAYS})"),
                );
                None
            }
        };

        let mut key_usage = Vec::new();
        for ku in &raw.key_usage {
            match KeyUsage::parse(ku.get_ref()) {
                Some(u) => key_usage.push(u),
                None => self.error(
                    ku.span(),
                    format!(
                        "unknown key usage `{}` (valid: {})",
                        ku.get_ref(),
                        list(KeyUsage::ALL.iter().map(|u| u.name()))
                    ),
                ),
            }
        }

        let mut extended_key_usage = Vec::new();
        for eku in &raw.extended_key_usage {
            match ExtendedKeyUsage::parse(eku.get_ref()) {
                Some(u) => extended_key_usage.push(u),
                None => self.error(
                    eku.span(),
                    format!(
                        "unknown extended key usage `{}` (valid: serverAuth, clientAuth, \
                         codeSigning, emailProtection, timeStamping, OCSPSigning, or a dotted \
                         OID such as 1.3.6.1.5.5.7.3.2)",
                        eku.get_ref()
                    ),
                ),
            }
        }

        for dns in &raw.dns_names {
            let s = dns.get_ref();
            if let Err(e) = crate::pki::san::San::dns_or_ip(s) {
                self.error(dns.span(), format!("dns_names entry {e}"));
            }
        }

        let content_type = match raw.content_type.as_ref().map(|c| (c, c.get_ref().as_str())) {
            None | Some((_, "pem")) => ContentType::Pem,
            Some((_, "pfx")) => ContentType::Pfx,
            Some((c, other)) => {
                self.error(
                    c.span(),
                    format!("unknown content_type `{other}` (expected pem or pfx)"),
                );
                ContentType::Pem
            }
        };

        let mut lifetime_actions = Vec::new();
        for action in &raw.lifetime_actions {
            let a = action.get_ref();
            let trigger = match (&a.days_before_expiry, &a.lifetime_percentage) {
                (Some(_), Some(pct)) => {
                    self.error(
                        pct.span(),
                        "a lifetime action takes one trigger: `days_before_expiry` or \
                         `lifetime_percentage`, not both",
                    );
                    None
                }
                (None, None) => {
                    self.error_missing_from(
                        action.span(),
                        "a lifetime action needs a trigger: `days_before_expiry = N` or \
                         `lifetime_percentage = N`",
                    );
                    None
                }
                (Some(days), None) => {
                    let d = *days.get_ref();
                    let upper = validity_days.map_or(i64::from(u32::MAX), i64::from);
                    if d >= 1 && d < upper {
                        Some(Trigger::DaysBeforeExpiry(d as u32))
                    } else {
                        let why = match validity_days {
                            Some(v) => format!("at least 1 and less than validity_days ({v})"),
                            None => "at least 1".to_string(),
                        };
                        self.error(days.span(), format!("days_before_expiry = {d} must be {why}"));
                        None
                    }
                }
                (None, Some(pct)) => {
                    let p = *pct.get_ref();
                    if (1..=99).contains(&p) {
                        Some(Trigger::LifetimePercentage(p as u8))
                    } else {
                        self.error(
                            pct.span(),
                            format!("lifetime_percentage = {p} is out of range (1 to 99)"),
                        );
                        None
                    }
                }
            };
            let kind = match a.action.get_ref().as_str() {
                "auto-renew" => Some(ActionKind::AutoRenew),
                "email-contacts" => Some(ActionKind::EmailContacts),
                other => {
                    self.error(
                        a.action.span(),
                        format!("unknown action `{other}` (expected auto-renew or email-contacts)"),
                    );
                    None
                }
            };
            if let (Some(trigger), Some(action)) = (trigger, kind) {
                lifetime_actions.push(LifetimeAction { trigger, action });
            }
        }

        if self.errors.len() > before {
            return None;
        }
        Some(Policy {
            name: name.get_ref().clone(),
            key: key?,
            exportable,
            reuse_key: raw.key.get_ref().reuse_key.unwrap_or(false),
            validity_days: validity_days?,
            key_usage,
            extended_key_usage,
            dns_names: raw.dns_names.iter().map(|d| d.get_ref().clone()).collect(),
            content_type,
            lifetime_actions,
        })
    }

    /// A policy's `key` table: the key spec and whether it is exportable.
    fn key(&mut self, key: &RawKey) -> (Option<KeySpec>, bool) {
        let kty = key.kty.get_ref().as_str();
        let (is_rsa, hsm) = match kty {
            "RSA" => (true, false),
            "RSA-HSM" => (true, true),
            "EC" => (false, false),
            "EC-HSM" => (false, true),
            other => {
                self.error(
                    key.kty.span(),
                    format!("unknown key type `{other}` (expected RSA, EC, RSA-HSM or EC-HSM)"),
                );
                return (None, false);
            }
        };
        let spec = if is_rsa {
            if let Some(curve) = &key.curve {
                self.error(
                    curve.span(),
                    format!("`curve` is for EC keys; an {kty} key takes `size` (2048, 3072 or 4096)"),
                );
            }
            match &key.size {
                None => Some(KeySpec::Rsa {
                    bits: RSA_SIZES[0],
                    hsm,
                }),
                Some(size) => match u32::try_from(*size.get_ref()) {
                    Ok(bits) if RSA_SIZES.contains(&bits) => Some(KeySpec::Rsa { bits, hsm }),
                    _ => {
                        self.error(
                            size.span(),
                            format!(
                                "RSA key size {} is not supported (allowed: {})",
                                size.get_ref(),
                                list(RSA_SIZES.iter().map(u32::to_string))
                            ),
                        );
                        None
                    }
                },
            }
        } else {
            if let Some(size) = &key.size {
                self.error(
                    size.span(),
                    format!("`size` is for RSA keys; an {kty} key takes `curve` (P-256, P-384 or P-521)"),
                );
            }
            match &key.curve {
                None => Some(KeySpec::Ec {
                    curve: Curve::P256,
                    hsm,
                }),
                Some(curve) => match Curve::parse(curve.get_ref()) {
                    Some(c) => Some(KeySpec::Ec { curve: c, hsm }),
                    None => {
                        self.error(
                            curve.span(),
                            format!(
                                "EC curve `{}` is not supported (allowed: P-256, P-384, P-521)",
                                curve.get_ref()
                            ),
                        );
                        None
                    }
                },
            }
        };
        let exportable = match &key.exportable {
            Some(e) if hsm && *e.get_ref() => {
                self.error(
                    e.span(),
                    format!("{kty} keys are never exportable; remove `exportable = true`"),
                );
                false
            }
            Some(e) => *e.get_ref(),
            None => !hsm,
        };
        (spec, exportable)
    }

    /// Checks that a policy used for device certificates cannot sign certificates and, on
    /// azure, that its key can be delivered.
    fn check_leaf_policy(
        &mut self,
        reference: &Spanned<String>,
        usage: &HashMap<&str, UsageFacts>,
        user: &str,
    ) {
        let name = reference.get_ref();
        let facts = usage.get(name.as_str());
        if facts.is_some_and(|u| u.key_cert_sign) {
            self.error(
                reference.span(),
                format!(
                    "policy `{name}` has keyCertSign in key_usage, so it cannot be used for \
                     device certificates ({user})"
                ),
            );
        }
        // On Azure a device's key travels to the device (a PFX through the delivery channel),
        // and Key Vault takes a key made outside it only by import, never as an HSM key: a key
        // that may not leave the vault could neither go in nor come out. The local store holds
        // the devices' keys itself, so there it stays allowed.
        if self.azure
            && let Some(kty) = facts.and_then(|u| u.kept.as_deref())
        {
            self.error(
                reference.span(),
                format!(
                    "policy `{name}` has a key that is not exportable ({kty}), so it cannot be \
                     used for device certificates on `[backend] kind = \"azure\"` ({user}): \
                     each device's key is delivered to the device, and Key Vault imports no \
                     HSM key; use an exportable key type (EC or RSA) for devices"
                ),
            );
        }
    }

    /// `[ca.NAME]`: each CA, then the issuer graph; returns the CAs in dependency order.
    fn cas(&mut self, raw: &RawPlan, usage: &HashMap<&str, UsageFacts>) -> Option<Vec<CaSpec>> {
        let before = self.errors.len();
        let entries = in_file_order(&raw.ca);
        // Issuer links that resolve to another CA; the graph checks only follow these.
        let mut links: HashMap<&str, &Spanned<String>> = HashMap::new();
        let mut path_lens: HashMap<&str, u8> = HashMap::new();
        let mut specs: BTreeMap<&str, CaSpec> = BTreeMap::new();
        for (name, ca) in &entries {
            let n = name.get_ref().as_str();
            self.check_name("CA", name);
            let subject = match Subject::parse(ca.subject.get_ref()) {
                Ok(s) => Some(s),
                Err(e) => {
                    self.error(
                        ca.subject.span(),
                        format!("invalid subject `{}`: {e}", ca.subject.get_ref()),
                    );
                    None
                }
            };
            if let Some(issuer) = &ca.issuer {
                if issuer.get_ref() == n {
                    self.error(
                        issuer.span(),
                        format!(
                            "CA `{n}` names itself as issuer; leave `issuer` out for a \
                             self-signed root"
                        ),
                    );
                } else if self.check_ref("CA", "CAs", issuer, &raw.ca) {
                    links.insert(n, issuer);
                }
            }
            let path_len = ca
                .path_len
                .as_ref()
                .and_then(|p| match u8::try_from(*p.get_ref()) {
                    Ok(len) => Some(len),
                    Err(_) => {
                        self.error(
                            p.span(),
                            format!("path_len = {} is out of range (0 to 255)", p.get_ref()),
                        );
                        None
                    }
                });
            if let Some(len) = path_len {
                path_lens.insert(n, len);
            }
            if self.check_ref("policy", "policies", &ca.policy, &raw.policies) {
                let policy = ca.policy.get_ref();
                if usage
                    .get(policy.as_str())
                    .is_some_and(|u| u.explicit && !u.key_cert_sign)
                {
                    self.error(
                        ca.policy.span(),
                        format!(
                            "policy `{policy}` has no keyCertSign in key_usage, so CA `{n}` \
                             could not sign; add keyCertSign or leave key_usage out for the CA \
                             default"
                        ),
                    );
                }
            }
            if let Some(subject) = subject {
                specs.insert(
                    n,
                    CaSpec {
                        name: n.to_string(),
                        subject,
                        issuer: ca.issuer.as_ref().map(|i| i.get_ref().clone()),
                        path_len,
                        policy: ca.policy.get_ref().clone(),
                    },
                );
            }
        }

        let file_index: HashMap<&str, usize> = entries
            .iter()
            .enumerate()
            .map(|(i, (name, _))| (name.get_ref().as_str(), i))
            .collect();
        let in_cycle = self.issuer_cycles(&entries, &links, &file_index);
        self.path_lengths(&entries, &links, &path_lens, &in_cycle);

        if self.errors.len() > before {
            return None;
        }
        // Kahn's algorithm, always taking the smallest ready name: issuers first, ties by name.
        let mut children: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
        for (child, issuer) in &links {
            children.entry(issuer.get_ref().as_str()).or_default().push(child);
        }
        let mut ready: BTreeSet<&str> = specs.keys().copied().filter(|n| !links.contains_key(n)).collect();
        let mut ordered = Vec::with_capacity(specs.len());
        while let Some(next) = ready.pop_first() {
            ready.extend(children.get(next).into_iter().flatten().copied());
            ordered.push(specs.remove(next)?);
        }
        Some(ordered)
    }

    /// Reports each issuer cycle once; returns the CAs that are on a cycle.
    fn issuer_cycles<'r>(
        &mut self,
        entries: &[(&'r Spanned<String>, &'r RawCa)],
        links: &HashMap<&'r str, &'r Spanned<String>>,
        file_index: &HashMap<&str, usize>,
    ) -> HashSet<&'r str> {
        #[derive(Clone, Copy, PartialEq)]
        enum State {
            OnPath,
            Done,
        }
        let mut state: HashMap<&str, State> = HashMap::new();
        let mut in_cycle = HashSet::new();
        for (start, _) in entries {
            let mut walk: Vec<&str> = Vec::new();
            let mut current = Some(start.get_ref().as_str());
            while let Some(ca) = current {
                match state.get(ca) {
                    None => {
                        state.insert(ca, State::OnPath);
                        walk.push(ca);
                        current = links.get(ca).map(|i| i.get_ref().as_str());
                    }
                    Some(State::OnPath) => {
                        let from = walk.iter().position(|c| *c == ca).unwrap_or(0);
                        let mut cycle = walk[from..].to_vec();
                        in_cycle.extend(cycle.iter().copied());
                        // Start the cycle at the CA that comes first in the file.
                        let first = (0..cycle.len())
                            .min_by_key(|&i| file_index[cycle[i]])
                            .unwrap_or(0);
                        cycle.rotate_left(first);
                        let head = cycle[0];
                        let text: Vec<&str> = cycle.iter().copied().chain([head]).collect();
                        self.error(
                            links[head].span(),
                            format!("CA issuer cycle: {}", text.join(" -> ")),
                        );
                        break;
                    }
                    Some(State::Done) => break,
                }
            }
            for ca in walk {
                state.insert(ca, State::Done);
            }
        }
        in_cycle
    }

    /// For every CA issued by others: no ancestor's path_len may be exceeded. The CA that is one
    /// level too deep below an ancestor is the one reported, at its `issuer` value.
    fn path_lengths(
        &mut self,
        entries: &[(&Spanned<String>, &RawCa)],
        links: &HashMap<&str, &Spanned<String>>,
        path_lens: &HashMap<&str, u8>,
        in_cycle: &HashSet<&str>,
    ) {
        for (name, _) in entries {
            let ca = name.get_ref().as_str();
            let Some(issuer_value) = links.get(ca) else {
                continue;
            };
            // chain[k] is the k-th ancestor of `ca`; chain[0] is `ca` itself.
            let mut chain = vec![ca];
            let mut current = ca;
            while let Some(issuer) = links.get(current).map(|i| i.get_ref().as_str()) {
                if in_cycle.contains(issuer) || chain.len() > links.len() {
                    break;
                }
                chain.push(issuer);
                let depth = chain.len() - 1;
                if let Some(&limit) = path_lens.get(issuer)
                    && depth == usize::from(limit) + 1
                {
                    let message = if limit == 0 {
                        format!(
                            "CA `{ca}` is issued by `{issuer}`, whose path_len = 0 allows no CA \
                             below it"
                        )
                    } else {
                        let path: Vec<&str> = chain.iter().rev().copied().collect();
                        format!(
                            "CA `{ca}` is {depth} levels below `{issuer}` ({}), but `{issuer}` \
                             has path_len = {limit}, which allows at most {limit} CA{} below it",
                            path.join(" -> "),
                            if limit == 1 { "" } else { "s" }
                        )
                    };
                    self.error(issuer_value.span(), message);
                    break;
                }
                current = issuer;
            }
        }
    }

    /// `[groups.NAME]`, with the lines of file-listed device ids (for duplicate messages).
    fn groups(
        &mut self,
        raw: &RawPlan,
        usage: &HashMap<&str, UsageFacts>,
    ) -> Option<BTreeMap<String, (GroupSpec, Vec<usize>)>> {
        let before = self.errors.len();
        let mut groups = BTreeMap::new();
        // The enrollment service holds a certificate in one enrollment entry only: a device whose
        // chain leads to a CA two groups share could not be told which group it belongs to.
        let mut signed_by: HashMap<&str, &str> = HashMap::new();
        for (name, group) in in_file_order(&raw.groups) {
            let n = name.get_ref();
            self.check_name("group", name);
            self.check_ref("CA", "CAs", &group.signing_ca, &raw.ca);
            let ca = group.signing_ca.get_ref().as_str();
            if let Some(first) = signed_by.insert(ca, n.as_str()) {
                self.error(
                    group.signing_ca.span(),
                    format!(
                        "group `{n}` has signing_ca = \"{ca}\", which group `{first}` already has: the \
                         enrollment service keeps a CA certificate in one enrollment group only, so it \
                         could not tell their devices apart; give each group a CA of its own (for \
                         example an intermediate per group below `{ca}`)"
                    ),
                );
                signed_by.insert(ca, first);
            }
            self.check_hub(&group.hub);
            self.place(format!("groups.{n}.hub"), group.hub.span());
            let reprovision = self.reprovision(group.reprovision.as_ref());
            if self.check_ref("policy", "policies", &group.device_policy, &raw.policies) {
                self.check_leaf_policy(
                    &group.device_policy,
                    usage,
                    &format!("group `{n}` uses it as device_policy"),
                );
            }
            if let Some((devices, lines)) = self.devices(n, &group.devices) {
                let spec = GroupSpec {
                    name: n.clone(),
                    signing_ca: group.signing_ca.get_ref().clone(),
                    hub: group.hub.get_ref().clone(),
                    reprovision,
                    device_policy: group.device_policy.get_ref().clone(),
                    devices,
                };
                groups.insert(n.clone(), (spec, lines));
            }
        }
        (self.errors.len() == before).then_some(groups)
    }

    /// A group's `devices`: generated ids, or ids read from a file (with their line numbers).
    fn devices(&mut self, group: &str, devices: &Spanned<RawDevices>) -> Option<(DeviceSource, Vec<usize>)> {
        let d = devices.get_ref();
        match (&d.prefix, &d.count, &d.file) {
            (Some(prefix), Some(count), None) => {
                let before = self.errors.len();
                let c = *count.get_ref();
                if !(1..=MAX_GROUP_COUNT).contains(&c) {
                    self.error(
                        count.span(),
                        format!("count = {c} is out of range (1 to {MAX_GROUP_COUNT})"),
                    );
                }
                let p = prefix.get_ref();
                if !p.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') {
                    self.error(
                        prefix.span(),
                        format!("device id prefix `{p}` is not valid: use only letters, digits and `-`"),
                    );
                } else if p.len() + c.to_string().len() > MAX_DEVICE_ID_LEN {
                    self.error(
                        prefix.span(),
                        format!(
                            "device id prefix `{p}` is too long: ids would exceed \
                             {MAX_DEVICE_ID_LEN} characters"
                        ),
                    );
                }
                (self.errors.len() == before).then(|| {
                    (
                        DeviceSource::Generated {
                            prefix: p.clone(),
                            count: c as u64,
                        },
                        Vec::new(),
                    )
                })
            }
            (None, None, Some(file)) => self.device_list(group, file),
            (None, None, None) => {
                self.error_missing_from(
                    devices.span(),
                    "`devices` needs `prefix` and `count` (generated ids) or `file` (a list of ids)",
                );
                None
            }
            (_, _, Some(_)) => {
                self.error(
                    devices.span(),
                    "`devices` takes either `prefix` and `count` or `file`, not both",
                );
                None
            }
            (Some(_), None, None) => {
                self.error_missing_from(devices.span(), "`devices` has `prefix` but no `count`");
                None
            }
            (None, Some(_), None) => {
                self.error_missing_from(
                    devices.span(),
                    "`devices` has `count` but no `prefix` (write prefix = \"\" for bare numbers)",
                );
                None
            }
        }
    }

    /// Reads a device list: one id per line; blank lines and `#` comments are skipped.
    fn device_list(&mut self, group: &str, file: &Spanned<String>) -> Option<(DeviceSource, Vec<usize>)> {
        let path = self.resolve(file.get_ref());
        let shown = self.shown_base.join(file.get_ref());
        let text = match crate::fsutil::read_bounded(&path, super::MAX_DEVICE_LIST_BYTES)
            .map_err(|e| e.to_string())
            .and_then(|bytes| super::utf8(&shown, bytes).map_err(|e| e.to_string()))
        {
            Ok(text) => text,
            Err(e) => {
                self.error(
                    file.span(),
                    format!("cannot read device list `{}`: {e}", path.display()),
                );
                return None;
            }
        };
        let before = self.errors.len();
        let mut ids = Vec::new();
        let mut lines = Vec::new();
        for (i, line) in text.lines().enumerate() {
            let id = line.trim();
            if id.is_empty() || id.starts_with('#') {
                continue;
            }
            if !is_id(id) || id.len() > MAX_DEVICE_ID_LEN {
                self.error_in_list(
                    file.span().start,
                    &shown,
                    i + 1,
                    format!(
                        "invalid device id `{}` in group `{group}`: use 1 to \
                         {MAX_DEVICE_ID_LEN} letters, digits and `-`",
                        crate::error::snippet(id)
                    ),
                );
                continue;
            }
            ids.push(id.to_string());
            lines.push(i + 1);
        }
        if ids.is_empty() && self.errors.len() == before {
            self.error(
                file.span(),
                format!("device list `{}` has no device ids", path.display()),
            );
        }
        (self.errors.len() == before).then_some((DeviceSource::File { path, ids }, lines))
    }

    /// `[enrollments.NAME]`; the name is also a device id.
    fn enrollments(
        &mut self,
        raw: &RawPlan,
        usage: &HashMap<&str, UsageFacts>,
    ) -> Option<BTreeMap<String, (EnrollmentSpec, usize)>> {
        let before = self.errors.len();
        let mut enrollments = BTreeMap::new();
        for (name, e) in in_file_order(&raw.enrollments) {
            let spec = self.enrollment(name, e, &raw.ca, &raw.policies, usage);
            enrollments.insert(name.get_ref().clone(), (spec, name.span().start));
        }
        (self.errors.len() == before).then_some(enrollments)
    }

    /// One individual enrollment.
    fn enrollment(
        &mut self,
        name: &Spanned<String>,
        e: &RawEnrollment,
        cas: &Named<RawCa>,
        policies: &Named<RawPolicy>,
        usage: &HashMap<&str, UsageFacts>,
    ) -> EnrollmentSpec {
        let n = name.get_ref();
        self.check_name("enrollment", name);
        self.check_ref("CA", "CAs", &e.issuer, cas);
        if self.check_ref("policy", "policies", &e.policy, policies) {
            self.check_leaf_policy(&e.policy, usage, &format!("enrollment `{n}` uses it"));
        }
        self.check_hub(&e.hub);
        self.place(format!("enrollments.{n}.hub"), e.hub.span());
        let reprovision = self.reprovision(e.reprovision.as_ref());
        EnrollmentSpec {
            name: n.clone(),
            issuer: e.issuer.get_ref().clone(),
            policy: e.policy.get_ref().clone(),
            hub: e.hub.get_ref().clone(),
            reprovision,
        }
    }

    /// No device id may appear twice: within a list, across groups, or as a group device and an
    /// individual enrollment. Sources are visited in file order and the later one is reported.
    fn unique_device_ids(
        &mut self,
        raw: &RawPlan,
        groups: &BTreeMap<String, (GroupSpec, Vec<usize>)>,
        enrollments: &BTreeMap<String, (EnrollmentSpec, usize)>,
    ) {
        let mut sources: Vec<(usize, Source)> = Vec::new();
        for (name, (spec, lines)) in groups {
            let Some((_, raw_group)) = raw.groups.iter().find(|(k, _)| k.get_ref() == name) else {
                continue;
            };
            let anchor = raw_group.devices.span();
            let source = match &spec.devices {
                DeviceSource::Generated { prefix, count } => Source::Generated {
                    group: name,
                    range: Generated {
                        prefix,
                        width: count.to_string().len(),
                        count: *count,
                    },
                    span: anchor.clone(),
                },
                DeviceSource::File { ids, .. } => {
                    let Some(file) = raw_group.devices.get_ref().file.as_ref() else {
                        continue;
                    };
                    let (file, span) = (file.get_ref().as_str(), file.span());
                    Source::Listed {
                        group: name,
                        file,
                        ids,
                        lines,
                        span,
                    }
                }
            };
            sources.push((anchor.start, source));
        }
        for (name, (_, at)) in enrollments {
            sources.push((*at, Source::Enrollment { name, at: *at }));
        }
        sources.sort_by_key(|(at, _)| *at);

        let mut seen: HashMap<&str, Place> = HashMap::new();
        let mut seen_order: Vec<&str> = Vec::new();
        let mut generated: Vec<(Generated, Place)> = Vec::new();
        for (_, source) in &sources {
            match source {
                Source::Generated { group, range, span } => {
                    let here = Place::Group(group);
                    let clash = generated
                        .iter()
                        .find_map(|(other, place)| range.first_common(other).map(|id| (id, *place)))
                        .or_else(|| {
                            seen_order
                                .iter()
                                .find(|id| range.contains(id))
                                .map(|id| (id.to_string(), seen[id]))
                        });
                    if let Some((id, place)) = clash {
                        self.error(span.clone(), duplicate(&id, place, here));
                        return;
                    }
                    generated.push((*range, here));
                }
                Source::Listed {
                    group,
                    file,
                    ids,
                    lines,
                    span,
                } => {
                    for (id, &line) in ids.iter().zip(lines.iter()) {
                        let here = Place::Listed { group, file, line };
                        let clash = seen
                            .get(id.as_str())
                            .copied()
                            .or_else(|| generated.iter().find(|(g, _)| g.contains(id)).map(|(_, p)| *p));
                        if let Some(place) = clash {
                            let shown = self.shown_base.join(file);
                            self.error_in_list(span.start, &shown, line, duplicate(id, place, here));
                            return;
                        }
                        seen.insert(id, here);
                        seen_order.push(id);
                    }
                }
                Source::Enrollment { name, at } => {
                    let here = Place::Enrollment(name);
                    let clash = seen
                        .get(*name)
                        .copied()
                        .or_else(|| generated.iter().find(|(g, _)| g.contains(name)).map(|(_, p)| *p));
                    if let Some(place) = clash {
                        let span = *at..*at;
                        self.error(span, duplicate(name, place, here));
                        return;
                    }
                    seen.insert(name, here);
                    seen_order.push(name);
                }
            }
        }
    }
}

/// "device id `x` appears in A and in B".
fn duplicate(id: &str, first: Place, second: Place) -> String {
    format!(
        "device id `{id}` appears in {} and in {}",
        first.describe(),
        second.describe()
    )
}

/// Where a device id is declared, for duplicate messages.
#[derive(Clone, Copy)]
enum Place<'a> {
    /// A generated group.
    Group(&'a str),
    /// A line of a group's device list.
    Listed {
        group: &'a str,
        file: &'a str,
        line: usize,
    },
    /// An individual enrollment.
    Enrollment(&'a str),
}

impl Place<'_> {
    fn describe(&self) -> String {
        match self {
            Place::Group(g) => format!("group `{g}`"),
            Place::Listed { group, file, line } => format!("group `{group}` ({file} line {line})"),
            Place::Enrollment(e) => format!("enrollment `{e}`"),
        }
    }
}

/// A source of device ids, for the duplicate check.
enum Source<'a> {
    Generated {
        group: &'a str,
        range: Generated<'a>,
        span: Range<usize>,
    },
    Listed {
        group: &'a str,
        file: &'a str,
        ids: &'a [String],
        lines: &'a [usize],
        span: Range<usize>,
    },
    Enrollment {
        name: &'a str,
        at: usize,
    },
}

/// The ids of a generated group: `prefix` + 1..=count zero-padded to `width` digits.
#[derive(Clone, Copy)]
struct Generated<'a> {
    prefix: &'a str,
    width: usize,
    count: u64,
}

impl Generated<'_> {
    /// Whether the group generates `id`.
    fn contains(&self, id: &str) -> bool {
        id.strip_prefix(self.prefix).is_some_and(|digits| {
            digits.len() == self.width
                && digits.bytes().all(|b| b.is_ascii_digit())
                && digits.parse::<u64>().is_ok_and(|n| (1..=self.count).contains(&n))
        })
    }

    /// An id both groups generate, if any, found without listing them.
    ///
    /// A common id has the same length in both. With `short` the group of the shorter prefix,
    /// the longer prefix must be the short one plus digits `extra`, and the id's number in `short`
    /// is `extra` followed by the `long` number's digits: `extra * 10^long.width + k`. The
    /// smallest candidate is `k = 1`, which is common exactly when it is within `short.count`.
    fn first_common(&self, other: &Generated<'_>) -> Option<String> {
        let (short, long) = if self.prefix.len() <= other.prefix.len() {
            (self, other)
        } else {
            (other, self)
        };
        if short.prefix.len() + short.width != long.prefix.len() + long.width {
            return None;
        }
        let extra = long.prefix.strip_prefix(short.prefix)?;
        if !extra.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        let extra: u128 = if extra.is_empty() { 0 } else { extra.parse().ok()? };
        let base = extra.checked_mul(10u128.checked_pow(u32::try_from(long.width).ok()?)?)?;
        (long.count >= 1 && base < u128::from(short.count))
            .then(|| format!("{}{:0width$}", long.prefix, 1, width = long.width))
    }
}

/// [`Generated::first_common`] on `(prefix, count)` pairs, for the brute-force test.
#[cfg(test)]
pub(super) fn first_common(a: (&str, u64), b: (&str, u64)) -> Option<String> {
    fn generated((prefix, count): (&str, u64)) -> Generated<'_> {
        Generated {
            prefix,
            width: count.to_string().len(),
            count,
        }
    }
    generated(a).first_common(&generated(b))
}
