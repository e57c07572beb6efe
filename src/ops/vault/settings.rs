//! The vault-wide settings: contacts and issuer objects.
//!
//! Contacts: once `vault contacts set` has stored a list, that list is the vault's contacts.
//! While none is stored (never set, or removed by `vault contacts delete`), the plan's
//! `[contacts] emails` are. Issuers: named issuer configurations a policy can refer to, besides
//! the built-in `Self` and `Unknown`; one that a certificate's policy names cannot be deleted.

use crate::backend::types::IssuerConfig;
use crate::error::input;
use crate::ops::{Access, BackendSettings, open_verb_backend};
use crate::plan::Plan;
use anyhow::Result;
use serde::Serialize;
use time::OffsetDateTime;

/// The vault's contacts and where they come from.
#[derive(Debug, Serialize)]
pub struct ContactsView {
    /// The addresses lifetime actions e-mail.
    pub contacts: Vec<String>,
    /// Where they were read from: `store` (set with `vault contacts set`, in the local store),
    /// `keyvault` (set so on azure: Key Vault's certificate contacts), `plan` (the plan's
    /// `[contacts] emails`, while none are set) or `none`.
    pub source: &'static str,
    /// What `vault contacts delete` removed from the store.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub removed: Option<Vec<String>>,
}

fn effective(plan: &Plan, stored: Option<Vec<String>>) -> ContactsView {
    match stored {
        Some(list) => ContactsView {
            contacts: list,
            source: if plan.azure.is_some() { "keyvault" } else { "store" },
            removed: None,
        },
        None if !plan.contacts.is_empty() => ContactsView {
            contacts: plan.contacts.clone(),
            source: "plan",
            removed: None,
        },
        None => ContactsView {
            contacts: Vec::new(),
            source: "none",
            removed: None,
        },
    }
}

/// Whether `text` is an e-mail address by the one rule of [`crate::pki::san::San::email`].
pub fn is_email(text: &str) -> bool {
    crate::pki::san::San::email(text).is_ok()
}

/// `emails` without duplicates (order kept), or an input error naming the first that is not an
/// e-mail address.
fn checked_contacts(emails: &[String]) -> Result<Vec<String>> {
    let mut list: Vec<String> = Vec::new();
    for e in emails {
        if !is_email(e) {
            return Err(input(format!("contact `{e}` is not an e-mail address")));
        }
        if !list.contains(e) {
            list.push(e.clone());
        }
    }
    Ok(list)
}

/// `vault contacts get`.
pub fn contacts_get(plan: &Plan, settings: &BackendSettings) -> Result<ContactsView> {
    let backend = open_verb_backend(plan, "vault", Access::Preview, settings)?;
    contacts_get_in(&*backend, plan)
}

/// `vault contacts set`: replaces the stored contacts (duplicates are dropped, order kept).
pub fn contacts_set(plan: &Plan, emails: &[String], settings: &BackendSettings) -> Result<ContactsView> {
    if emails.is_empty() {
        return Err(input("vault contacts set needs at least one e-mail address"));
    }
    let list = checked_contacts(emails)?;
    let mut backend = open_verb_backend(plan, "vault", Access::Write, settings)?;
    contacts_set_in(&mut *backend, plan, &list)
}

/// Stores checked contacts on an open backend.
pub fn contacts_set_in(
    backend: &mut dyn crate::backend::Backend,
    plan: &Plan,
    emails: &[String],
) -> Result<ContactsView> {
    if emails.is_empty() {
        return Err(input("the contacts list is empty"));
    }
    let list = checked_contacts(emails)?;
    backend.set_contacts(Some(&list))?;
    Ok(effective(plan, Some(list)))
}

/// The vault's contacts on an open backend (the plan's while none are stored).
pub fn contacts_get_in(backend: &dyn crate::backend::Backend, plan: &Plan) -> Result<ContactsView> {
    Ok(effective(plan, backend.contacts()?))
}

/// `vault contacts delete`: removes the stored contacts (the plan's then apply again).
pub fn contacts_delete(plan: &Plan, settings: &BackendSettings) -> Result<ContactsView> {
    let mut backend = open_verb_backend(plan, "vault", Access::Write, settings)?;
    contacts_delete_in(&mut *backend, plan)
}

/// `vault contacts delete` on an open backend.
pub fn contacts_delete_in(backend: &mut dyn crate::backend::Backend, plan: &Plan) -> Result<ContactsView> {
    let removed = backend.contacts()?.unwrap_or_default();
    backend.set_contacts(None)?;
    let mut view = effective(plan, None);
    view.removed = Some(removed);
    Ok(view)
}

/// The names a policy may use without an issuer object.
pub const BUILT_IN_ISSUERS: [&str; 2] = ["Self", "Unknown"];

/// `vault issuers set`: creates or replaces an issuer object.
pub fn issuer_set(
    plan: &Plan,
    name: &str,
    provider: &str,
    account_id: Option<&str>,
    settings: &BackendSettings,
    now: OffsetDateTime,
) -> Result<IssuerConfig> {
    check_issuer(name, provider, account_id)?;
    let mut backend = open_verb_backend(plan, "vault", Access::Write, settings)?;
    issuer_set_in(&mut *backend, name, provider, account_id, now)
}

/// `vault issuers set` on an open backend.
pub fn issuer_set_in(
    backend: &mut dyn crate::backend::Backend,
    name: &str,
    provider: &str,
    account_id: Option<&str>,
    now: OffsetDateTime,
) -> Result<IssuerConfig> {
    check_issuer(name, provider, account_id)?;
    // Key Vault keeps an issuer's creation time across updates.
    let created = backend
        .issuers()?
        .into_iter()
        .find(|i| i.name == name)
        .map_or(now, |i| i.created);
    backend.put_issuer(
        &IssuerConfig {
            name: name.to_string(),
            provider: provider.to_string(),
            account_id: account_id.map(str::to_string),
            enabled: true,
            created,
            updated: now,
        },
        now,
    )?;
    find(&backend.issuers()?, name)
}

fn check_issuer(name: &str, provider: &str, account_id: Option<&str>) -> Result<()> {
    super::check_new_name("issuer", name)?;
    if BUILT_IN_ISSUERS.iter().any(|b| b.eq_ignore_ascii_case(name)) {
        return Err(input(format!(
            "issuer name `{name}` is reserved: `Self` and `Unknown` are built in"
        )));
    }
    if provider.is_empty()
        || provider.len() > 128
        || provider.chars().any(|c| c.is_whitespace() || c.is_control())
    {
        return Err(input(format!(
            "--provider `{provider}` is not valid: 1 to 128 characters without spaces (e.g. DigiCert, GlobalSign)"
        )));
    }
    if let Some(a) = account_id
        && (a.is_empty() || a.chars().any(char::is_control))
    {
        return Err(input(format!("--account-id `{a}` is not valid")));
    }
    Ok(())
}

fn find(issuers: &[IssuerConfig], name: &str) -> Result<IssuerConfig> {
    issuers.iter().find(|i| i.name == name).cloned().ok_or_else(|| {
        input(format!(
            "the vault has no issuer `{name}` (`certroll vault issuers list`)"
        ))
    })
}

/// `vault issuers get`.
pub fn issuer_get(plan: &Plan, name: &str, settings: &BackendSettings) -> Result<IssuerConfig> {
    let backend = open_verb_backend(plan, "vault", Access::Preview, settings)?;
    issuer_get_in(&*backend, name)
}

/// `vault issuers list`.
pub fn issuer_list(plan: &Plan, settings: &BackendSettings) -> Result<Vec<IssuerConfig>> {
    let backend = open_verb_backend(plan, "vault", Access::Preview, settings)?;
    Ok(backend.issuers()?)
}

/// `vault issuers delete`: refused while a certificate's policy (live, deleted or pending)
/// names the issuer.
pub fn issuer_delete(plan: &Plan, name: &str, settings: &BackendSettings) -> Result<IssuerConfig> {
    let mut backend = open_verb_backend(plan, "vault", Access::Write, settings)?;
    issuer_delete_in(&mut *backend, name)
}

/// An issuer object on an open backend.
pub fn issuer_get_in(backend: &dyn crate::backend::Backend, name: &str) -> Result<IssuerConfig> {
    find(&backend.issuers()?, name)
}

/// `vault issuers delete` on an open backend.
pub fn issuer_delete_in(backend: &mut dyn crate::backend::Backend, name: &str) -> Result<IssuerConfig> {
    let found = find(&backend.issuers()?, name)?;
    let users = backend.issuer_users(name)?;
    if !users.is_empty() {
        return Err(input(format!(
            "issuer `{name}` is named by the policy of {}; it cannot be deleted while they use it",
            users.join(", ")
        )));
    }
    backend.delete_issuer(name)?;
    Ok(found)
}

/// Checks the issuer a new policy names: `Self`, `Unknown` or a set issuer object. Returns its
/// canonical spelling.
pub fn check_policy_issuer(backend: &dyn crate::backend::Backend, name: &str) -> Result<String> {
    if let Some(b) = BUILT_IN_ISSUERS.iter().find(|b| b.eq_ignore_ascii_case(name)) {
        return Ok(b.to_string());
    }
    let issuers = backend.issuers()?;
    if issuers.iter().any(|i| i.name == name) {
        return Ok(name.to_string());
    }
    Err(input(format!(
        "issuer `{name}` is not `Self`, `Unknown` or a set issuer (set: {})",
        if issuers.is_empty() {
            "none".to_string()
        } else {
            issuers
                .iter()
                .map(|i| i.name.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        }
    )))
}
