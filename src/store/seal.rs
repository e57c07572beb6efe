//! Sealing private keys at rest: AES-256-GCM under a store key kept apart from the store file.
//!
//! Each sealed key is `nonce (12 bytes) || ciphertext+tag`, with the record's identity as the
//! associated data, so a sealed key copied onto another record does not open.

use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use std::path::{Path, PathBuf};
use zeroize::Zeroizing;

/// Errors of the store key.
#[derive(Debug, thiserror::Error)]
pub enum SealError {
    /// The key file exists but is not 64 hex characters.
    #[error("store key in {0} is not 64 hexadecimal characters")]
    BadKeyFile(PathBuf),
    /// The key file is a directory, device, FIFO or too large.
    #[error("store key file {path}: {why}")]
    NotAKeyFile {
        /// The key file.
        path: PathBuf,
        /// What it is instead.
        why: String,
    },
    /// The key from the environment is not 64 hex characters.
    #[error("CERTROLL_STORE_KEY is not 64 hexadecimal characters")]
    BadKeyEnv,
    /// The key file could not be read or created.
    #[error("store key file {path}: {source}")]
    Io {
        /// The key file.
        path: PathBuf,
        /// What failed.
        source: std::io::Error,
    },
    /// A sealed key did not open: wrong store key, or the record was tampered with.
    #[error("a sealed private key ({0}) does not open with this store key (wrong key file?)")]
    Open(String),
    /// Encryption failed (random generator).
    #[error("sealing a private key failed")]
    Seal,
}

/// The store key.
pub struct StoreKey {
    key: LessSafeKey,
}

impl std::fmt::Debug for StoreKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("StoreKey(<redacted>)")
    }
}

fn parse_hex_key(text: &str) -> Option<Zeroizing<[u8; 32]>> {
    let text = text.trim();
    if text.len() != 64 {
        return None;
    }
    let mut out = Zeroizing::new([0u8; 32]);
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(text.get(i * 2..i * 2 + 2)?, 16).ok()?;
    }
    Some(out)
}

/// The most a store key file may hold (64 hex digits and a newline, with room for spaces): a
/// device or huge file given as the key file is refused at once.
const KEY_FILE_LIMIT: u64 = 4096;

impl StoreKey {
    pub(crate) fn from_raw(bytes: &[u8; 32]) -> StoreKey {
        Self::from_bytes(bytes)
    }

    fn from_bytes(bytes: &[u8; 32]) -> StoreKey {
        let unbound = UnboundKey::new(&AES_256_GCM, bytes).expect("32 bytes is an AES-256 key");
        StoreKey {
            key: LessSafeKey::new(unbound),
        }
    }

    /// The key from `CERTROLL_STORE_KEY` (64 hex chars), if set.
    pub fn from_env() -> Result<Option<StoreKey>, SealError> {
        match std::env::var("CERTROLL_STORE_KEY") {
            Ok(text) => {
                let bytes = parse_hex_key(&text).ok_or(SealError::BadKeyEnv)?;
                Ok(Some(StoreKey::from_bytes(&bytes)))
            }
            Err(_) => Ok(None),
        }
    }

    /// Reads the key file; with `create`, makes a new random key there (mode 0600) if it is absent.
    pub fn from_file(path: &Path, create: bool) -> Result<Option<StoreKey>, SealError> {
        let io = |source| SealError::Io {
            path: path.to_path_buf(),
            source,
        };
        match crate::fsutil::read_bounded(path, KEY_FILE_LIMIT) {
            Ok(raw) => {
                let raw = Zeroizing::new(raw);
                let bytes = std::str::from_utf8(&raw)
                    .ok()
                    .and_then(parse_hex_key)
                    .ok_or_else(|| SealError::BadKeyFile(path.into()))?;
                Ok(Some(StoreKey::from_bytes(&bytes)))
            }
            Err(e) if e.kind() == std::io::ErrorKind::InvalidInput => Err(SealError::NotAKeyFile {
                path: path.into(),
                why: e.to_string(),
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && create => {
                let mut bytes = Zeroizing::new([0u8; 32]);
                crate::pki::random_bytes(bytes.as_mut()).map_err(|_| SealError::Seal)?;
                let mut text = Zeroizing::new(crate::pki::hex_upper(bytes.as_ref()));
                text.push('\n');
                // Written whole under a temporary name and linked into place: a kill leaves no
                // key file or a complete one, never an empty one.
                match crate::fsutil::create_atomic(path, text.as_bytes(), true) {
                    Ok(()) => Ok(Some(StoreKey::from_bytes(&bytes))),
                    // Another certroll creating the same store linked its key first: use that.
                    Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Self::from_file(path, false),
                    Err(e) => Err(io(e)),
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io(e)),
        }
    }

    /// Encrypts `plaintext`, binding it to `identity`.
    pub fn seal(&self, identity: &str, plaintext: &[u8]) -> Result<Vec<u8>, SealError> {
        let mut nonce = [0u8; NONCE_LEN];
        crate::pki::random_bytes(&mut nonce).map_err(|_| SealError::Seal)?;
        let mut buf = Vec::with_capacity(NONCE_LEN + plaintext.len() + 16);
        buf.extend_from_slice(&nonce);
        buf.extend_from_slice(plaintext);
        let mut in_out = buf.split_off(NONCE_LEN);
        self.key
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(identity.as_bytes()),
                &mut in_out,
            )
            .map_err(|_| SealError::Seal)?;
        buf.extend_from_slice(&in_out);
        in_out.iter_mut().for_each(|b| *b = 0);
        Ok(buf)
    }

    /// Decrypts what [`seal`](Self::seal) wrote for the same `identity`.
    pub fn open(&self, identity: &str, sealed: &[u8]) -> Result<Zeroizing<Vec<u8>>, SealError> {
        if sealed.len() < NONCE_LEN + 16 {
            return Err(SealError::Open(identity.into()));
        }
        let (nonce, ciphertext) = sealed.split_at(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| SealError::Open(identity.into()))?;
        let mut buf = Zeroizing::new(ciphertext.to_vec());
        let plain_len = self
            .key
            .open_in_place(nonce, Aad::from(identity.as_bytes()), buf.as_mut_slice())
            .map_err(|_| SealError::Open(identity.into()))?
            .len();
        buf.truncate(plain_len);
        Ok(buf)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_keys_open_only_under_their_identity_and_key() {
        let key = StoreKey::from_bytes(&[7u8; 32]);
        let sealed = key.seal("vault/a/1", b"secret key bytes").unwrap();
        assert!(!sealed.windows(6).any(|w| w == b"secret"));
        assert_eq!(
            key.open("vault/a/1", &sealed).unwrap().as_slice(),
            b"secret key bytes"
        );
        assert!(key.open("vault/b/1", &sealed).is_err());
        assert!(
            StoreKey::from_bytes(&[8u8; 32])
                .open("vault/a/1", &sealed)
                .is_err()
        );
        // Two seals of the same bytes differ (fresh nonce each time).
        assert_ne!(key.seal("x", b"k").unwrap(), key.seal("x", b"k").unwrap());
    }

    #[test]
    fn key_file_is_created_0600_and_read_back() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("store.key");
        let key = StoreKey::from_file(&path, true).unwrap().unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let sealed = key.seal("id", b"abc").unwrap();
        let again = StoreKey::from_file(&path, false).unwrap().unwrap();
        assert_eq!(again.open("id", &sealed).unwrap().as_slice(), b"abc");
        std::fs::write(&path, "not hex").unwrap();
        assert!(matches!(
            StoreKey::from_file(&path, false),
            Err(SealError::BadKeyFile(_))
        ));
    }
}
