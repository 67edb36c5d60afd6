//! Keys of the audit trail: the operator's commitment key, the Ed25519 checkpoint key pair,
//! and per-tenant content keys (crypto-shredding).

use std::collections::HashMap;
use std::fmt;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use ed25519_dalek::{SigningKey, VerifyingKey};

use crate::error::{GovernError, Result};

/// Name of the checkpoint signing key written by [`generate_keys`].
pub const SIGNING_KEY_FILE: &str = "ed25519.key";
/// Name of the checkpoint public key written by [`generate_keys`].
pub const PUBLIC_KEY_FILE: &str = "ed25519.pub";
/// Name of the commitment key written by [`generate_keys`].
pub const COMMITMENT_KEY_FILE: &str = "commitment.key";

/// 32 random bytes from the operating system.
pub(crate) fn random_32() -> Result<[u8; 32]> {
    let mut b = [0u8; 32];
    getrandom::fill(&mut b).map_err(|e| GovernError::Crypto(format!("no randomness: {e}")))?;
    Ok(b)
}

fn parse_hex32(s: &str, what: &str) -> Result<[u8; 32]> {
    let bytes = hex::decode(s.trim())
        .map_err(|e| GovernError::InvalidKey(format!("{what}: not hex: {e}")))?;
    bytes.try_into().map_err(|v: Vec<u8>| {
        GovernError::InvalidKey(format!("{what}: expected 32 bytes, got {}", v.len()))
    })
}

/// The operator's secret key for content commitments.
///
/// Commitments are keyed so that low-entropy content (a yes/no answer, a phone number) cannot
/// be recovered from the log by hashing guesses. Each tenant gets its own subkey
/// ([`CommitmentKey::tenant_key`]).
#[derive(Clone)]
pub struct CommitmentKey([u8; 32]);

impl fmt::Debug for CommitmentKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("CommitmentKey(..)")
    }
}

impl CommitmentKey {
    /// A key from raw bytes.
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    /// A key from 64 hex digits.
    pub fn from_hex(s: &str) -> Result<Self> {
        parse_hex32(s, "commitment key").map(Self)
    }

    /// The key in the environment variable `var` (64 hex digits).
    pub fn from_env(var: &str) -> Result<Self> {
        let v = std::env::var(var).map_err(|_| {
            GovernError::InvalidKey(format!("environment variable {var} is not set"))
        })?;
        Self::from_hex(&v)
    }

    /// A fresh random key.
    pub fn generate() -> Result<Self> {
        random_32().map(Self)
    }

    /// The key as hex.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    /// The subkey used for `tenant`'s commitments:
    /// `BLAKE3-keyed(operator key, "llmops.audit.v1.commitment-key\n" ‖ tenant)`.
    pub fn tenant_key(&self, tenant: &str) -> [u8; 32] {
        let mut h = blake3::Hasher::new_keyed(&self.0);
        h.update(b"llmops.audit.v1.commitment-key\n");
        h.update(tenant.as_bytes());
        *h.finalize().as_bytes()
    }

    /// The commitment to `canonical` content for `tenant`: keyed BLAKE3, hex.
    pub fn commit(&self, tenant: &str, canonical: &[u8]) -> String {
        blake3::keyed_hash(&self.tenant_key(tenant), canonical)
            .to_hex()
            .to_string()
    }
}

/// The short id of a public key: the first 4 bytes of BLAKE3 of its 32 bytes, as 8 hex digits.
pub fn key_id(public: &VerifyingKey) -> String {
    hex::encode(&blake3::hash(public.as_bytes()).as_bytes()[..4])
}

/// Reads an Ed25519 signing key file (64 hex digits: the 32-byte seed).
pub fn load_signing_key(path: &Path) -> Result<SigningKey> {
    let s = fs::read_to_string(path).map_err(|e| GovernError::io("read", path, e))?;
    Ok(SigningKey::from_bytes(&parse_hex32(&s, "signing key")?))
}

/// Reads an Ed25519 public key file (64 hex digits).
pub fn load_public_key(path: &Path) -> Result<VerifyingKey> {
    let s = fs::read_to_string(path).map_err(|e| GovernError::io("read", path, e))?;
    VerifyingKey::from_bytes(&parse_hex32(&s, "public key")?)
        .map_err(|e| GovernError::InvalidKey(format!("public key: {e}")))
}

/// The files written by [`generate_keys`].
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct GeneratedKeys {
    /// The Ed25519 signing key (secret).
    pub signing_key: PathBuf,
    /// The Ed25519 public key (give it to verifiers).
    pub public_key: PathBuf,
    /// The commitment key (secret; export it as `LLMOPS_AUDIT_KEY`).
    pub commitment_key: PathBuf,
    /// The public key's id.
    pub key_id: String,
}

fn write_secret(path: &Path, contents: &str) -> Result<()> {
    let mut opts = fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let mut f = opts
        .open(path)
        .map_err(|e| GovernError::io("create", path, e))?;
    f.write_all(contents.as_bytes())
        .map_err(|e| GovernError::io("write", path, e))?;
    f.sync_all().map_err(|e| GovernError::io("fsync", path, e))
}

/// Generates a checkpoint key pair and a commitment key in `dir` (created if needed).
/// Refuses to overwrite existing key files.
pub fn generate_keys(dir: &Path) -> Result<GeneratedKeys> {
    fs::create_dir_all(dir).map_err(|e| GovernError::io("create directory", dir, e))?;
    let signing = SigningKey::from_bytes(&random_32()?);
    let public = signing.verifying_key();
    let commitment = CommitmentKey::generate()?;
    let out = GeneratedKeys {
        signing_key: dir.join(SIGNING_KEY_FILE),
        public_key: dir.join(PUBLIC_KEY_FILE),
        commitment_key: dir.join(COMMITMENT_KEY_FILE),
        key_id: key_id(&public),
    };
    for p in [&out.signing_key, &out.public_key, &out.commitment_key] {
        if p.exists() {
            return Err(GovernError::InvalidKey(format!(
                "{} already exists; refusing to overwrite a key",
                p.display()
            )));
        }
    }
    write_secret(
        &out.signing_key,
        &format!("{}\n", hex::encode(signing.to_bytes())),
    )?;
    write_secret(&out.commitment_key, &format!("{}\n", commitment.to_hex()))?;
    fs::write(
        &out.public_key,
        format!("{}\n", hex::encode(public.as_bytes())),
    )
    .map_err(|e| GovernError::io("write", &out.public_key, e))?;
    Ok(out)
}

/// A tenant's content key (XChaCha20-Poly1305).
#[derive(Clone)]
pub struct ContentKey([u8; 32]);

impl fmt::Debug for ContentKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ContentKey({})", self.id())
    }
}

/// Associated data binding an encrypted content blob to its tenant and request.
fn aad(tenant: &str, request_id: &str) -> Vec<u8> {
    let mut a = b"llmops.audit.v1.content\n".to_vec();
    a.extend_from_slice(tenant.as_bytes());
    a.push(b'\n');
    a.extend_from_slice(request_id.as_bytes());
    a
}

impl ContentKey {
    /// A key from raw bytes.
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    /// The key's id: first 4 bytes of BLAKE3 of the key, hex.
    pub fn id(&self) -> String {
        hex::encode(&blake3::hash(&self.0).as_bytes()[..4])
    }

    /// Encrypts `plaintext` for `tenant`'s request `request_id`.
    pub fn seal(&self, tenant: &str, request_id: &str, plaintext: &[u8]) -> Result<SealedContent> {
        let cipher = XChaCha20Poly1305::new((&self.0).into());
        let mut nonce = [0u8; 24];
        getrandom::fill(&mut nonce)
            .map_err(|e| GovernError::Crypto(format!("no randomness: {e}")))?;
        let ct = cipher
            .encrypt(
                XNonce::from_slice(&nonce),
                Payload {
                    msg: plaintext,
                    aad: &aad(tenant, request_id),
                },
            )
            .map_err(|_| GovernError::Crypto("encryption failed".into()))?;
        Ok(SealedContent {
            alg: "xchacha20poly1305".into(),
            kid: self.id(),
            nonce: B64.encode(nonce),
            ct: B64.encode(ct),
        })
    }

    /// Decrypts content sealed by [`ContentKey::seal`].
    pub fn open(&self, tenant: &str, request_id: &str, sealed: &SealedContent) -> Result<Vec<u8>> {
        if sealed.alg != "xchacha20poly1305" {
            return Err(GovernError::Crypto(format!(
                "unknown algorithm {:?}",
                sealed.alg
            )));
        }
        let nonce = B64
            .decode(&sealed.nonce)
            .map_err(|e| GovernError::Crypto(format!("nonce: {e}")))?;
        if nonce.len() != 24 {
            return Err(GovernError::Crypto("nonce must be 24 bytes".into()));
        }
        let ct = B64
            .decode(&sealed.ct)
            .map_err(|e| GovernError::Crypto(format!("ciphertext: {e}")))?;
        let cipher = XChaCha20Poly1305::new((&self.0).into());
        cipher
            .decrypt(
                XNonce::from_slice(&nonce),
                Payload {
                    msg: &ct,
                    aad: &aad(tenant, request_id),
                },
            )
            .map_err(|_| GovernError::Crypto("wrong key or damaged content".into()))
    }
}

/// Encrypted content as stored in a record's `content` member.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[non_exhaustive]
pub struct SealedContent {
    /// `xchacha20poly1305`.
    pub alg: String,
    /// The id of the tenant key used.
    pub kid: String,
    /// The 24-byte nonce, base64.
    pub nonce: String,
    /// Ciphertext and tag, base64.
    pub ct: String,
}

/// Where per-tenant content keys live. Deleting a tenant's key ([`ContentKeyStore::shred`])
/// makes every piece of that tenant's stored content unreadable; the chain, which hashes the
/// ciphertext, still verifies.
pub trait ContentKeyStore: Send + Sync + fmt::Debug {
    /// The tenant's key, if it exists.
    fn get(&self, tenant: &str) -> Result<Option<ContentKey>>;
    /// The tenant's key, created if it does not exist yet.
    fn get_or_create(&self, tenant: &str) -> Result<ContentKey>;
    /// Deletes the tenant's key for good. Returns whether a key existed.
    fn shred(&self, tenant: &str) -> Result<bool>;
}

/// A [`ContentKeyStore`] keeping one file per tenant in a directory (file name: the first
/// 16 bytes of BLAKE3 of the tenant name, hex, plus `.key`; contents: 64 hex digits).
///
/// Erasure is only as good as the medium: on copy-on-write file systems and SSDs a deleted
/// file's blocks may survive; keep this directory on encrypted storage or use a KMS-backed
/// store for strong guarantees.
#[derive(Debug)]
pub struct DirKeyStore {
    dir: PathBuf,
    cache: Mutex<HashMap<String, ContentKey>>,
}

impl DirKeyStore {
    /// A store in `dir` (created if needed).
    pub fn open(dir: impl Into<PathBuf>) -> Result<Arc<Self>> {
        let dir = dir.into();
        fs::create_dir_all(&dir).map_err(|e| GovernError::io("create directory", &dir, e))?;
        Ok(Arc::new(Self {
            dir,
            cache: Mutex::new(HashMap::new()),
        }))
    }

    fn path(&self, tenant: &str) -> PathBuf {
        let h = blake3::hash(tenant.as_bytes());
        self.dir
            .join(format!("{}.key", hex::encode(&h.as_bytes()[..16])))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, ContentKey>> {
        self.cache
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

fn read_content_key(path: &Path) -> Result<Option<ContentKey>> {
    match fs::read_to_string(path) {
        Ok(s) => Ok(Some(ContentKey(parse_hex32(&s, "content key")?))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(GovernError::io("read", path, e)),
    }
}

impl ContentKeyStore for DirKeyStore {
    fn get(&self, tenant: &str) -> Result<Option<ContentKey>> {
        if let Some(k) = self.lock().get(tenant) {
            return Ok(Some(k.clone()));
        }
        let key = read_content_key(&self.path(tenant))?;
        if let Some(k) = &key {
            self.lock().insert(tenant.to_owned(), k.clone());
        }
        Ok(key)
    }

    fn get_or_create(&self, tenant: &str) -> Result<ContentKey> {
        // The cache lock serializes creation within the process; across processes the key
        // file appears atomically, complete, through a hard link of a fully written temporary
        // file, so a reader never sees a half-written key.
        let mut cache = self.lock();
        if let Some(k) = cache.get(tenant) {
            return Ok(k.clone());
        }
        let path = self.path(tenant);
        if let Some(k) = read_content_key(&path)? {
            cache.insert(tenant.to_owned(), k.clone());
            return Ok(k);
        }
        let key = ContentKey(random_32()?);
        let tmp = path.with_extension(format!("tmp-{}", hex::encode(random_32()?)));
        write_secret(&tmp, &format!("{}\n", hex::encode(key.0)))?;
        let linked = fs::hard_link(&tmp, &path);
        let _ = fs::remove_file(&tmp);
        let key = match linked {
            Ok(()) => key,
            // Another process created it first: use theirs.
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => read_content_key(&path)?
                .ok_or_else(|| GovernError::Crypto("key vanished".into()))?,
            Err(e) => return Err(GovernError::io("link", &path, e)),
        };
        cache.insert(tenant.to_owned(), key.clone());
        Ok(key)
    }

    fn shred(&self, tenant: &str) -> Result<bool> {
        self.lock().remove(tenant);
        let path = self.path(tenant);
        match fs::remove_file(&path) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(GovernError::io("remove", path, e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keygen_writes_a_usable_pair_and_refuses_to_overwrite() {
        let dir = tempfile::tempdir().unwrap();
        let k = generate_keys(dir.path()).unwrap();
        let sk = load_signing_key(&k.signing_key).unwrap();
        let pk = load_public_key(&k.public_key).unwrap();
        assert_eq!(sk.verifying_key(), pk);
        assert_eq!(key_id(&pk), k.key_id);
        let ck = std::fs::read_to_string(&k.commitment_key).unwrap();
        CommitmentKey::from_hex(&ck).unwrap();
        assert!(matches!(
            generate_keys(dir.path()),
            Err(GovernError::InvalidKey(_))
        ));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&k.signing_key)
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }

    #[test]
    fn bad_key_strings_are_rejected() {
        assert!(CommitmentKey::from_hex("zz").is_err());
        assert!(CommitmentKey::from_hex("abcd").is_err());
        assert!(CommitmentKey::from_hex(&"ab".repeat(32)).is_ok());
    }

    #[test]
    fn commitments_depend_on_key_and_tenant() {
        let a = CommitmentKey::from_bytes([1; 32]);
        let b = CommitmentKey::from_bytes([2; 32]);
        assert_ne!(a.commit("t", b"yes"), b.commit("t", b"yes"));
        assert_ne!(a.commit("t1", b"yes"), a.commit("t2", b"yes"));
        assert_eq!(a.commit("t", b"yes"), a.commit("t", b"yes"));
        // Not the plain hash: a dictionary attack without the key learns nothing.
        assert_ne!(
            a.commit("t", b"yes"),
            blake3::hash(b"yes").to_hex().to_string()
        );
    }

    #[test]
    fn sealed_content_round_trips_and_shredding_makes_it_unreadable() {
        let dir = tempfile::tempdir().unwrap();
        let store = DirKeyStore::open(dir.path()).unwrap();
        let key = store.get_or_create("team-a").unwrap();
        let sealed = key.seal("team-a", "r1", b"secret prompt").unwrap();
        assert_eq!(key.open("team-a", "r1", &sealed).unwrap(), b"secret prompt");
        // Bound to tenant and request.
        assert!(key.open("team-b", "r1", &sealed).is_err());
        assert!(key.open("team-a", "r2", &sealed).is_err());
        // A second store instance reads the same key from disk.
        let again = DirKeyStore::open(dir.path())
            .unwrap()
            .get("team-a")
            .unwrap()
            .unwrap();
        assert_eq!(again.id(), key.id());
        assert!(store.shred("team-a").unwrap());
        assert!(store.get("team-a").unwrap().is_none());
        assert!(!store.shred("team-a").unwrap());
        let fresh = store.get_or_create("team-a").unwrap();
        assert!(fresh.open("team-a", "r1", &sealed).is_err());
    }
}
