//! The DPS's CA certificates on the Azure Resource Manager paths
//! (`{resource_id}/certificates/{name}`, azure-wire.md §2.9): upload, proof of possession
//! (`generateVerificationCode`, `verify`) and delete, each with the etag just read (`If-Match`),
//! re-read and retried on 412. Authorized with Entra bearer tokens for ARM's scope.

use super::rest::{Call, RestClient, ServiceSpec, if_match, segment};
use crate::backend::types::ServiceCa;
use crate::backend::{BackendError, Result};
use crate::plan::ClientLimits;
use azure_core::credentials::TokenCredential;
use azure_core::http::policies::auth::BearerTokenAuthorizationPolicy;
use azure_core::http::{ClientOptions, Method};
use base64::Engine as _;
use serde_json::{Value, json};
use std::sync::Arc;

use super::SetupError;

/// The api-version of the DPS certificate operations.
pub const API_VERSION: &str = "2022-02-05";
/// ARM's Entra scope.
pub const SCOPE: &str = "https://management.azure.com/.default";
/// ARM's endpoint.
pub const ENDPOINT: &str = "https://management.azure.com";
/// Requests a second by default: ARM refills a subscription's write budget at a few a second,
/// and certroll's CA operations are few.
pub const DEFAULT_RATE: f64 = 3.0;
/// How many times a step is re-read and retried after 412.
const MAX_PRECONDITION_RETRIES: usize = 5;

/// The CA certificates of one DPS.
pub struct ArmCertificates {
    client: RestClient,
    /// `{resource_id}/certificates`, encoded.
    base_path: String,
}

impl std::fmt::Debug for ArmCertificates {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ArmCertificates")
            .field("base_path", &self.base_path)
            .finish_non_exhaustive()
    }
}

/// A CA certificate as ARM answers it, with its etag.
struct Entry {
    ca: ServiceCa,
    etag: String,
}

fn decode_certificate(text: &str) -> Option<Vec<u8>> {
    let text = text.trim();
    if crate::pki::pem::is_pem(text.as_bytes()) {
        return crate::pki::pem::certs_from_pem(text.as_bytes())
            .ok()
            .and_then(|c| c.into_iter().next());
    }
    base64::engine::general_purpose::STANDARD
        .decode(text.split_whitespace().collect::<String>())
        .ok()
}

fn entry_of(v: &Value) -> Option<Entry> {
    let p = &v["properties"];
    let cert_der = decode_certificate(p["certificate"].as_str()?)?;
    Some(Entry {
        ca: ServiceCa {
            name: v["name"].as_str()?.to_string(),
            thumbprint: p["thumbprint"]
                .as_str()
                .map(str::to_ascii_uppercase)
                .unwrap_or_else(|| crate::pki::sha1_thumbprint(&cert_der)),
            cert_der,
            verified: p["isVerified"].as_bool().unwrap_or(false),
        },
        etag: v["etag"].as_str().unwrap_or("*").to_string(),
    })
}

impl ArmCertificates {
    /// The certificates of the DPS at `resource_id` (`/subscriptions/.../provisioningServices/NAME`),
    /// with tokens from `credential`.
    pub fn new(
        resource_id: &str,
        options: ClientOptions,
        credential: Arc<dyn TokenCredential>,
        limits: ClientLimits,
    ) -> std::result::Result<ArmCertificates, SetupError> {
        let auth = Arc::new(BearerTokenAuthorizationPolicy::new(credential, [SCOPE]));
        let client = RestClient::new(
            ServiceSpec {
                service: "ARM",
                base: ENDPOINT.into(),
                api_version: API_VERSION,
                default_rate: DEFAULT_RATE,
                burst_secs: 0.5,
            },
            options,
            auth,
            ClientLimits {
                rate: None,
                concurrency: limits.concurrency.min(4),
            },
        )?;
        let base_path = format!(
            "{}/certificates",
            resource_id
                .trim_end_matches('/')
                .split('/')
                .map(segment)
                .collect::<Vec<_>>()
                .join("/")
        );
        Ok(ArmCertificates { client, base_path })
    }

    fn path(&self, name: &str) -> String {
        format!("{}/{}", self.base_path, segment(name))
    }

    async fn read(&self, name: &str) -> Result<Option<Entry>> {
        let call = Call::new(Method::Get, self.path(name), "get CA certificate", name);
        let answer = self.client.expect(&call, &[200, 404]).await?;
        if answer.status == 404 {
            return Ok(None);
        }
        entry_of(&answer.json())
            .map(Some)
            .ok_or_else(|| self.unreadable(&call))
    }

    fn unreadable(&self, call: &Call<'_>) -> BackendError {
        BackendError::Remote {
            service: "ARM",
            operation: call.operation.to_string(),
            target: call.target.to_string(),
            status: Some(200),
            code: "InvalidResponse".into(),
            message: "the answer holds no readable certificate".into(),
        }
    }

    fn missing(name: &str) -> BackendError {
        BackendError::NotFound(format!("CA certificate `{name}`"))
    }

    /// One CA certificate.
    pub async fn get(&self, name: &str) -> Result<Option<ServiceCa>> {
        Ok(self.read(name).await?.map(|e| e.ca))
    }

    /// Every CA certificate of the DPS.
    pub async fn list(&self) -> Result<Vec<ServiceCa>> {
        let call = Call::new(Method::Get, self.base_path.clone(), "list CA certificates", "*");
        let answer = self.client.expect(&call, &[200]).await?;
        let body = answer.json();
        let mut out = Vec::new();
        for v in body["value"].as_array().into_iter().flatten() {
            out.push(entry_of(v).ok_or_else(|| self.unreadable(&call))?.ca);
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    /// Uploads (or replaces, with the etag read) a CA certificate; unverified until proof of
    /// possession.
    pub async fn upload(&self, name: &str, cert_der: &[u8]) -> Result<()> {
        let body = json!({"properties": {
            "certificate": base64::engine::general_purpose::STANDARD.encode(cert_der),
            "isVerified": false,
        }});
        let mut tries = 0;
        loop {
            let current = self.read(name).await?;
            let mut call =
                Call::new(Method::Put, self.path(name), "upload CA certificate", name).json(body.clone());
            if let Some(e) = &current {
                call = call.header("if-match", if_match(&e.etag));
            }
            let answer = self.client.send(&call).await?;
            match answer.status {
                200 | 201 => return Ok(()),
                // Changed (412) or created (409) since the read: read again.
                409 | 412 if tries < MAX_PRECONDITION_RETRIES => tries += 1,
                409 | 412 => return Err(self.client.kept_changing(&call, &answer, tries)),
                _ => return Err(self.client.error(&call, &answer)),
            }
        }
    }

    /// A POST or DELETE that needs the current etag: read, send with If-Match, again on 412.
    async fn with_etag(
        &self,
        name: &str,
        method: Method,
        suffix: &str,
        operation: &str,
        body: Option<Value>,
    ) -> Result<Value> {
        let mut tries = 0;
        loop {
            let Some(current) = self.read(name).await? else {
                return Err(Self::missing(name));
            };
            let mut call = Call::new(method, format!("{}{suffix}", self.path(name)), operation, name)
                .header("if-match", if_match(&current.etag));
            if let Some(body) = &body {
                call = call.json(body);
            }
            let answer = self.client.send(&call).await?;
            match answer.status {
                200 | 202 | 204 => return Ok(answer.json()),
                412 if tries < MAX_PRECONDITION_RETRIES => tries += 1,
                412 => return Err(self.client.kept_changing(&call, &answer, tries)),
                404 => return Err(Self::missing(name)),
                _ => return Err(self.client.error(&call, &answer)),
            }
        }
    }

    /// Removes a CA certificate (already gone is done).
    pub async fn delete(&self, name: &str) -> Result<()> {
        match self
            .with_etag(name, Method::Delete, "", "delete CA certificate", None)
            .await
        {
            Ok(_) | Err(BackendError::NotFound(_)) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// A fresh proof-of-possession nonce.
    pub async fn verification_code(&self, name: &str) -> Result<String> {
        let body = self
            .with_etag(
                name,
                Method::Post,
                "/generateVerificationCode",
                "generate verification code",
                None,
            )
            .await?;
        body["properties"]["verificationCode"]
            .as_str()
            .map(str::to_string)
            .ok_or_else(|| BackendError::Remote {
                service: "ARM",
                operation: "generate verification code".into(),
                target: name.into(),
                status: Some(200),
                code: "InvalidResponse".into(),
                message: "the answer has no verificationCode".into(),
            })
    }

    /// Proves possession with a certificate whose CN is the nonce, signed by the CA's key.
    pub async fn verify(&self, name: &str, verification_cert_der: &[u8]) -> Result<()> {
        let body =
            json!({"certificate": base64::engine::general_purpose::STANDARD.encode(verification_cert_der)});
        self.with_etag(name, Method::Post, "/verify", "verify CA certificate", Some(body))
            .await
            .map(|_| ())
    }
}
