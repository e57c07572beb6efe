//! The emulator's TLS: its own CA (generated once, kept in the store, its key sealed), a server
//! certificate for the Azure host names issued from it at each start, and a rustls server
//! configuration that requests (never requires) a client certificate and hands the presented
//! chain to the handlers as [`ClientChain`].
//!
//! The certificates here follow the real clock, not `--now`: clients check them with theirs.

use crate::backend::local::LocalBackend;
use crate::pki::PrivateKey;
use crate::pki::cert::{CertProfile, IssuerKey, sign_leaf, sign_self};
use crate::pki::spec::{Curve, ExtendedKeyUsage, KeySpec, KeyUsage, Subject};
use anyhow::{Context as _, Result};
use rustls::DigitallySignedStruct;
use rustls::client::danger::HandshakeSignatureValid;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use std::sync::Arc;
use time::OffsetDateTime;

/// The client certificate chain presented in the TLS handshake (DER, leaf first), as a request
/// extension; absent when the client sent none. The TLS layer does not judge it: the DPS device
/// API and the hub's device endpoint verify it against what they trust.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientChain(pub Vec<Vec<u8>>);

const META_CA_CERT: &str = "serve/ca_cert";
const META_CA_KEY: &str = "serve/ca_key";
/// The sealing identity of the CA key (binds the sealed bytes to their purpose).
const CA_KEY_IDENTITY: &str = "certroll/serve-ca-key";

/// The emulator's CA: what clients are told to trust (`--ca-out`).
pub struct EmulatorCa {
    /// The CA certificate, DER.
    pub cert_der: Vec<u8>,
    key: IssuerKey,
}

impl EmulatorCa {
    /// The CA certificate, PEM.
    pub fn pem(&self) -> String {
        crate::pki::pem::cert_to_pem(&self.cert_der)
    }
}

/// Reads a `store_meta` value.
pub fn meta_get(backend: &LocalBackend, key: &str) -> Result<Option<Vec<u8>>> {
    use rusqlite::OptionalExtension as _;
    let store = backend.store();
    store
        .conn()
        .query_row("SELECT value FROM store_meta WHERE key = ?1", [key], |r| r.get(0))
        .optional()
        .map_err(|e| store.err(e).into())
}

/// Writes a `store_meta` value (inside the caller's unit of work).
pub fn meta_put(backend: &LocalBackend, key: &str, value: &[u8]) -> Result<()> {
    let store = backend.store();
    store
        .conn()
        .execute(
            "INSERT INTO store_meta (key, value) VALUES (?1, ?2)
             ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            rusqlite::params![key, value],
        )
        .map_err(|e| store.err(e))?;
    Ok(())
}

/// The emulator CA kept in the store; made (EC P-256, ten years) on the first start. Call inside
/// a unit of work holding the writer lock.
pub fn load_or_create_ca(backend: &LocalBackend, now: OffsetDateTime) -> Result<EmulatorCa> {
    let spec = KeySpec::Ec {
        curve: Curve::P256,
        hsm: false,
    };
    if let (Some(cert_der), Some(sealed)) =
        (meta_get(backend, META_CA_CERT)?, meta_get(backend, META_CA_KEY)?)
    {
        let pkcs8 = backend.store().key().open(CA_KEY_IDENTITY, &sealed)?;
        let key = PrivateKey::from_pkcs8(&pkcs8, &spec)?;
        return Ok(EmulatorCa {
            key: IssuerKey::new(cert_der.clone(), key)?,
            cert_der,
        });
    }
    let key = PrivateKey::generate(&spec)?;
    let profile = CertProfile {
        subject: Subject::parse("CN=certroll serve emulator CA, O=certroll").map_err(anyhow::Error::msg)?,
        dns_names: vec![],
        key_usage: vec![
            KeyUsage::DigitalSignature,
            KeyUsage::KeyCertSign,
            KeyUsage::CrlSign,
        ],
        extended_key_usage: vec![],
        not_before: now - time::Duration::hours(1),
        not_after: now + time::Duration::days(3650),
        ca: Some(Some(0)),
    };
    let cert_der = sign_self(&profile, &key)?;
    let sealed = backend.store().key().seal(CA_KEY_IDENTITY, key.pkcs8_der())?;
    meta_put(backend, META_CA_CERT, &cert_der)?;
    meta_put(backend, META_CA_KEY, &sealed)?;
    Ok(EmulatorCa {
        key: IssuerKey::new(cert_der.clone(), key)?,
        cert_der,
    })
}

/// The names the server certificate carries: every Azure host the emulator answers to (by
/// wildcard), plus loopback.
pub fn server_names() -> Vec<String> {
    [
        "*.vault.azure.net",
        "*.azure-devices-provisioning.net",
        "*.azure-devices.net",
        "management.azure.com",
        "localhost",
        "127.0.0.1",
    ]
    .into_iter()
    .map(String::from)
    .collect()
}

/// A rustls server configuration presenting a fresh server certificate (one year) issued by the
/// CA for `names`, requesting a client certificate without requiring one.
pub fn server_config(
    ca: &EmulatorCa,
    names: &[String],
    now: OffsetDateTime,
) -> Result<Arc<rustls::ServerConfig>> {
    let key = PrivateKey::generate(&KeySpec::Ec {
        curve: Curve::P256,
        hsm: false,
    })?;
    let profile = CertProfile {
        subject: Subject::common_name("certroll serve"),
        dns_names: names.to_vec(),
        key_usage: vec![KeyUsage::DigitalSignature],
        extended_key_usage: vec![ExtendedKeyUsage::ServerAuth],
        not_before: now - time::Duration::hours(1),
        not_after: now + time::Duration::days(365),
        ca: None,
    };
    let leaf = sign_leaf(&profile, &key, &ca.key)?;
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let verifier = Arc::new(RequestClientCert {
        algorithms: provider.signature_verification_algorithms,
    });
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .context("TLS protocol versions")?
        .with_client_cert_verifier(verifier)
        .with_single_cert(
            vec![
                CertificateDer::from(leaf),
                CertificateDer::from(ca.cert_der.clone()),
            ],
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.pkcs8_der().to_vec())),
        )
        .context("the emulator's server certificate")?;
    // HTTP/1.0 too: a client that offers only it (`curl --http1.0`) is answered, not refused
    // with a TLS alert.
    config.alpn_protocols = vec![b"http/1.1".to_vec(), b"http/1.0".to_vec()];
    Ok(Arc::new(config))
}

/// Asks every client for a certificate, accepts any (or none), and checks only that the client
/// holds the key of what it presented (the handshake signature). Whether the chain is trusted
/// is the device endpoints' decision, made with the service's own rules.
#[derive(Debug)]
struct RequestClientCert {
    algorithms: rustls::crypto::WebPkiSupportedAlgorithms,
}

impl ClientCertVerifier for RequestClientCert {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        false
    }

    fn root_hint_subjects(&self) -> &[rustls::DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        // With the certificate's public key alone: webpki refuses to parse a version 1
        // certificate (what `openssl x509 -req` makes without extensions), which would end the
        // handshake with an alert before the device endpoints could answer 401 with a reason.
        // Possession of the key is all this step proves either way.
        match rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms) {
            Ok(valid) => Ok(valid),
            Err(e) => {
                let spki = x509_parser::parse_x509_certificate(cert.as_ref())
                    .map(|(_, c)| c.public_key().raw.to_vec())
                    .map_err(|_| e)?;
                rustls::crypto::verify_tls13_signature_with_raw_key(
                    message,
                    &rustls::pki_types::SubjectPublicKeyInfoDer::from(spki),
                    dss,
                    &self.algorithms,
                )
            }
        }
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}
