//! Encryption at rest: Secrets and the cluster's own secrets are stored in
//! Postgres only as ciphertext, under keys kept in a file outside the
//! database (`--encryption-key-file`).
//!
//! **Envelope.** Every sealed value gets a fresh data key (AES-256-GCM,
//! random 96-bit nonce); the data key is itself encrypted (wrapped) under
//! the key file's first key, whose id is stored next to the ciphertext. So
//! a value names the key that opens it, several keys can be in use while a
//! rotation runs, and the same shape would take a KMS in place of the file.
//! The ciphertext is bound (as associated data) to what it belongs to
//! (`Secret/NAMESPACE/NAME`, `cluster/NAME`): someone able to write the
//! database cannot move one Secret's ciphertext onto another and have it
//! served there.
//!
//! **What of a Secret is sealed.** Everything but `apiVersion`, `kind`,
//! `type` and `metadata` without its annotations: the store needs the
//! identity, labels and resourceVersion in the clear to query and to check
//! preconditions; annotations are sealed because a client-side apply copies
//! the whole object, data included, into one.
//!
//! **The key file** holds one key per line, `ID BASE64`, the first used for
//! new values and every one for reading; `#` starts a comment. It must be
//! readable by its owner alone. Key ids are derived from the key, so a
//! value can never name the wrong key. Control planes reread the file when
//! it changes (and at once when a value names a key they do not hold), so a
//! rotation needs no restart.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::RwLock;
use std::time::SystemTime;

use aes_gcm::aead::{Aead, Payload};
use aes_gcm::{Aes256Gcm, KeyInit, Nonce};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

/// Length of a key (and of a data key), in bytes.
pub const KEY_LEN: usize = 32;
const NONCE_LEN: usize = 12;
/// The field of a stored Secret that holds its sealed part.
pub const SEALED_FIELD: &str = "sealed";
/// What each sealed value starts with, so legacy plaintext (written before
/// encryption existed) is told apart from ciphertext.
const SEALED_BYTES_PREFIX: &[u8] = b"{\"v\":1,";

#[derive(Debug, Clone, thiserror::Error)]
pub enum EncryptionError {
    #[error("encryption key file {path}: {message}")]
    KeyFile { path: PathBuf, message: String },
    #[error(
        "{what} is encrypted under key {key}, which the encryption key file does not hold; add that key back to the file"
    )]
    UnknownKey { what: String, key: String },
    #[error("{what} cannot be decrypted: {reason}")]
    Corrupt { what: String, reason: String },
}

/// One key of the file, ready to wrap and unwrap data keys.
struct Key {
    id: String,
    cipher: Aes256Gcm,
}

impl Key {
    fn new(bytes: &[u8; KEY_LEN]) -> Self {
        Key {
            id: key_id(bytes),
            cipher: Aes256Gcm::new(bytes.into()),
        }
    }
}

/// A key's id: a digest of the key, short enough to store with every
/// value, telling nothing of the key.
fn key_id(key: &[u8; KEY_LEN]) -> String {
    let digest = Sha256::new_with_prefix(b"skiff-encryption-key-id\n")
        .chain_update(key)
        .finalize();
    let hex: String = digest[..8].iter().map(|b| format!("{b:02x}")).collect();
    format!("k{hex}")
}

struct Keys {
    /// The first is the one new values are sealed under.
    list: Vec<Key>,
    /// The file's modification time and length when it was read.
    stamp: Option<(SystemTime, u64)>,
}

/// The keys of a key file, reread when the file changes.
pub struct Keyring {
    path: PathBuf,
    keys: RwLock<Keys>,
}

impl std::fmt::Debug for Keyring {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Keyring").field("path", &self.path).finish()
    }
}

/// A sealed value as stored.
#[derive(Serialize, Deserialize)]
struct Envelope {
    v: u8,
    /// The id of the key the data key is wrapped under.
    key: String,
    /// Nonce and wrapped data key, base64.
    dek: String,
    /// Nonce and ciphertext, base64.
    data: String,
}

impl Keyring {
    /// Reads the key file at `path`.
    pub fn load(path: &Path) -> Result<Keyring, EncryptionError> {
        let (list, stamp) = read_key_file(path)?;
        Ok(Keyring {
            path: path.to_owned(),
            keys: RwLock::new(Keys {
                list,
                stamp: Some(stamp),
            }),
        })
    }

    /// Creates a key file with one new key at `path` (readable by its
    /// owner alone) unless one is there; says whether it created it.
    pub fn create_file(path: &Path) -> Result<bool, EncryptionError> {
        if path.exists() {
            read_key_file(path)?;
            return Ok(false);
        }
        write_key_file(path, &[new_key()], true)?;
        Ok(true)
    }

    /// Puts a new key first in the file at `path`, keeping the others for
    /// reading; returns the new key's id.
    pub fn add_primary(path: &Path) -> Result<String, EncryptionError> {
        let old = raw_keys(path)?;
        let key = new_key();
        let id = key_id(&key);
        let mut keys = vec![key];
        keys.extend(old);
        write_key_file(path, &keys, false)?;
        Ok(id)
    }

    /// Removes from the file at `path` every key but the first and those
    /// in `keep`; returns the ids removed.
    pub fn prune_file(path: &Path, keep: &[String]) -> Result<Vec<String>, EncryptionError> {
        let keys = raw_keys(path)?;
        let (kept, removed): (Vec<_>, Vec<_>) = keys
            .into_iter()
            .enumerate()
            .partition(|(i, key)| *i == 0 || keep.contains(&key_id(key)));
        let removed = removed.iter().map(|(_, key)| key_id(key)).collect();
        let kept: Vec<_> = kept.into_iter().map(|(_, key)| key).collect();
        write_key_file(path, &kept, false)?;
        Ok(removed)
    }

    /// The id of the key new values are sealed under.
    pub fn primary_id(&self) -> String {
        self.keys.read().expect("keyring lock").list[0].id.clone()
    }

    /// Rereads the file if it changed since it was read. A file that has
    /// become unreadable or invalid keeps the keys already held (and is
    /// reported), so a half-edited file never stops the control plane.
    pub fn reload_if_changed(&self) -> Result<bool, EncryptionError> {
        let stamp = file_stamp(&self.path).ok();
        if stamp.is_some() && stamp == self.keys.read().expect("keyring lock").stamp {
            return Ok(false);
        }
        let (list, stamp) = read_key_file(&self.path)?;
        *self.keys.write().expect("keyring lock") = Keys {
            list,
            stamp: Some(stamp),
        };
        Ok(true)
    }

    /// Seals `plaintext`, bound to `context`.
    pub fn seal(&self, context: &str, plaintext: &[u8]) -> Vec<u8> {
        let keys = self.keys.read().expect("keyring lock");
        let key = &keys.list[0];
        let dek = new_key();
        let data = encrypt(
            &Aes256Gcm::new((&dek).into()),
            context.as_bytes(),
            plaintext,
        );
        let dek = encrypt(&key.cipher, key.id.as_bytes(), &dek);
        let envelope = Envelope {
            v: 1,
            key: key.id.clone(),
            dek: STANDARD.encode(dek),
            data: STANDARD.encode(data),
        };
        serde_json::to_vec(&envelope).expect("an envelope serializes")
    }

    /// Whether `stored` is a sealed value (not legacy plaintext).
    pub fn is_sealed(stored: &[u8]) -> bool {
        stored.starts_with(SEALED_BYTES_PREFIX)
    }

    /// The id of the key a sealed value names.
    pub fn key_of(stored: &[u8]) -> Option<String> {
        serde_json::from_slice::<Envelope>(stored)
            .ok()
            .map(|envelope| envelope.key)
    }

    /// Opens a value sealed for `context`; `what` names it in errors.
    pub fn unseal(
        &self,
        what: &str,
        context: &str,
        stored: &[u8],
    ) -> Result<Vec<u8>, EncryptionError> {
        let corrupt = |reason: &str| EncryptionError::Corrupt {
            what: what.to_owned(),
            reason: reason.to_owned(),
        };
        let envelope: Envelope =
            serde_json::from_slice(stored).map_err(|_| corrupt("not a sealed value"))?;
        let dek = STANDARD
            .decode(&envelope.dek)
            .map_err(|_| corrupt("its data key is not base64"))?;
        let data = STANDARD
            .decode(&envelope.data)
            .map_err(|_| corrupt("its data is not base64"))?;
        if !self.holds(&envelope.key) {
            // Another control plane may have rotated: read the file again.
            if let Err(e) = self.reload_if_changed() {
                tracing::warn!("{e}");
            }
        }
        let keys = self.keys.read().expect("keyring lock");
        let key = keys
            .list
            .iter()
            .find(|k| k.id == envelope.key)
            .ok_or_else(|| EncryptionError::UnknownKey {
                what: what.to_owned(),
                key: envelope.key.clone(),
            })?;
        let dek = decrypt(&key.cipher, key.id.as_bytes(), &dek)
            .ok_or_else(|| corrupt("its data key does not open under its key"))?;
        let dek: [u8; KEY_LEN] = dek
            .try_into()
            .map_err(|_| corrupt("its data key has the wrong length"))?;
        decrypt(&Aes256Gcm::new((&dek).into()), context.as_bytes(), &data)
            .ok_or_else(|| corrupt("the ciphertext does not open for this object"))
    }

    fn holds(&self, id: &str) -> bool {
        let keys = self.keys.read().expect("keyring lock");
        keys.list.iter().any(|k| k.id == id)
    }

    /// A Secret as stored: its sealed part in [`SEALED_FIELD`].
    pub fn seal_secret(&self, object: &Value) -> Value {
        let Some(fields) = object.as_object() else {
            return object.clone();
        };
        let mut stored = Map::new();
        let mut hidden = Map::new();
        for (name, value) in fields {
            match name.as_str() {
                "apiVersion" | "kind" | "type" => {
                    stored.insert(name.clone(), value.clone());
                }
                "metadata" => {
                    let mut metadata = value.clone();
                    if let Some(annotations) = metadata
                        .as_object_mut()
                        .and_then(|m| m.remove("annotations"))
                    {
                        hidden.insert("annotations".into(), annotations);
                    }
                    stored.insert(name.clone(), metadata);
                }
                _ => {
                    hidden.insert(name.clone(), value.clone());
                }
            }
        }
        let plaintext = serde_json::to_vec(&hidden).expect("JSON serializes");
        let sealed = self.seal(&secret_context(object), &plaintext);
        stored.insert(
            SEALED_FIELD.into(),
            serde_json::from_slice(&sealed).expect("an envelope is JSON"),
        );
        Value::Object(stored)
    }

    /// A stored Secret opened. One stored before encryption (no sealed
    /// part) is returned as it is.
    pub fn unseal_secret(&self, mut stored: Value) -> Result<Value, EncryptionError> {
        let Some(sealed) = stored
            .as_object_mut()
            .and_then(|fields| fields.remove(SEALED_FIELD))
        else {
            return Ok(stored);
        };
        let context = secret_context(&stored);
        let what = format!("secret {}", &context["Secret/".len()..]);
        let bytes = serde_json::to_vec(&sealed).expect("JSON serializes");
        let plaintext = self.unseal(&what, &context, &bytes)?;
        let hidden: Map<String, Value> =
            serde_json::from_slice(&plaintext).map_err(|_| EncryptionError::Corrupt {
                what: what.clone(),
                reason: "its plaintext is not a JSON object".into(),
            })?;
        let fields = stored.as_object_mut().expect("checked above");
        for (name, value) in hidden {
            if name == "annotations" {
                if let Some(metadata) = fields.get_mut("metadata").and_then(Value::as_object_mut) {
                    metadata.insert(name, value);
                }
            } else {
                fields.insert(name, value);
            }
        }
        Ok(stored)
    }

    /// The key id a stored Secret is sealed under; `None` for plaintext.
    pub fn secret_key_id(stored: &Value) -> Option<&str> {
        stored.get(SEALED_FIELD)?.get("key")?.as_str()
    }
}

/// What a Secret's ciphertext is bound to.
fn secret_context(object: &Value) -> String {
    let metadata = &object["metadata"];
    format!(
        "Secret/{}/{}",
        metadata["namespace"].as_str().unwrap_or_default(),
        metadata["name"].as_str().unwrap_or_default()
    )
}

/// What a cluster secret's ciphertext is bound to.
pub fn cluster_secret_context(name: &str) -> String {
    format!("cluster/{name}")
}

fn new_key() -> [u8; KEY_LEN] {
    let mut key = [0u8; KEY_LEN];
    getrandom::fill(&mut key).expect("the operating system's random source works");
    key
}

/// Nonce and ciphertext.
fn encrypt(cipher: &Aes256Gcm, aad: &[u8], plaintext: &[u8]) -> Vec<u8> {
    let mut nonce = [0u8; NONCE_LEN];
    getrandom::fill(&mut nonce).expect("the operating system's random source works");
    let ciphertext = cipher
        .encrypt(
            Nonce::from_slice(&nonce),
            Payload {
                msg: plaintext,
                aad,
            },
        )
        .expect("AES-GCM encrypts any message of a sane length");
    let mut out = nonce.to_vec();
    out.extend_from_slice(&ciphertext);
    out
}

fn decrypt(cipher: &Aes256Gcm, aad: &[u8], sealed: &[u8]) -> Option<Vec<u8>> {
    if sealed.len() < NONCE_LEN {
        return None;
    }
    let (nonce, ciphertext) = sealed.split_at(NONCE_LEN);
    cipher
        .decrypt(
            Nonce::from_slice(nonce),
            Payload {
                msg: ciphertext,
                aad,
            },
        )
        .ok()
}

fn file_stamp(path: &Path) -> std::io::Result<(SystemTime, u64)> {
    let metadata = std::fs::metadata(path)?;
    Ok((metadata.modified()?, metadata.len()))
}

fn key_file_error(path: &Path, message: impl Into<String>) -> EncryptionError {
    EncryptionError::KeyFile {
        path: path.to_owned(),
        message: message.into(),
    }
}

/// The keys of the file, in order, checked: owner-only permissions, one
/// `ID BASE64` per line, ids matching their keys, at least one key.
fn raw_keys(path: &Path) -> Result<Vec<[u8; KEY_LEN]>, EncryptionError> {
    let error = |message: String| key_file_error(path, message);
    let metadata = std::fs::metadata(path).map_err(|e| error(e.to_string()))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = metadata.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            return Err(error(format!(
                "is readable by others than its owner (mode {mode:04o}); chmod 600 it"
            )));
        }
    }
    let text = std::fs::read_to_string(path).map_err(|e| error(e.to_string()))?;
    let mut keys = Vec::new();
    for (number, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let at = |what: &str| error(format!("line {}: {what}", number + 1));
        let (id, encoded) = line
            .split_once(char::is_whitespace)
            .ok_or_else(|| at("expected `ID BASE64-KEY`"))?;
        let bytes = STANDARD
            .decode(encoded.trim())
            .map_err(|_| at("the key is not base64"))?;
        let key: [u8; KEY_LEN] = bytes
            .try_into()
            .map_err(|_| at("the key is not 32 bytes"))?;
        if key_id(&key) != id {
            return Err(at(&format!(
                "the id {id} does not belong to this key (it is {})",
                key_id(&key)
            )));
        }
        keys.push(key);
    }
    if keys.is_empty() {
        return Err(error("holds no key".into()));
    }
    Ok(keys)
}

fn read_key_file(path: &Path) -> Result<(Vec<Key>, (SystemTime, u64)), EncryptionError> {
    let stamp = file_stamp(path).map_err(|e| key_file_error(path, e.to_string()))?;
    let keys = raw_keys(path)?.iter().map(Key::new).collect();
    Ok((keys, stamp))
}

/// Writes the keys, owner-only, in place of the file at once (a new file
/// renamed over the old one), or as a new file when `exclusive`.
fn write_key_file(
    path: &Path,
    keys: &[[u8; KEY_LEN]],
    exclusive: bool,
) -> Result<(), EncryptionError> {
    let error = |e: std::io::Error| key_file_error(path, e.to_string());
    let mut text = String::from(
        "# Skiff encryption keys: the first encrypts, every one decrypts. Keep this file\n\
         # outside the database, readable by the control plane alone, and backed up.\n",
    );
    for key in keys {
        text.push_str(&format!("{} {}\n", key_id(key), STANDARD.encode(key)));
    }
    let target = if exclusive {
        path.to_owned()
    } else {
        path.with_extension("new")
    };
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        options.mode(0o600);
    }
    if !exclusive {
        let _ = std::fs::remove_file(&target);
    }
    let mut file = options.open(&target).map_err(error)?;
    file.write_all(text.as_bytes()).map_err(error)?;
    file.sync_all().map_err(error)?;
    if !exclusive {
        std::fs::rename(&target, path).map_err(error)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn keyring(dir: &Path) -> Keyring {
        let path = dir.join("keys");
        assert!(Keyring::create_file(&path).unwrap());
        Keyring::load(&path).unwrap()
    }

    fn secret() -> Value {
        json!({
            "apiVersion": "skiff.dev/v1", "kind": "Secret", "type": "Opaque",
            "metadata": {"name": "db", "namespace": "shop", "labels": {"app": "web"},
                         "resourceVersion": "7",
                         "annotations": {"last-applied": "{\"data\":{\"password\":\"aHVudGVyMg==\"}}"}},
            "data": {"password": "aHVudGVyMg=="},
            "stringData": {"user": "admin"},
        })
    }

    #[test]
    fn a_sealed_secret_keeps_only_its_identity_in_the_clear() {
        let dir = tempfile::tempdir().unwrap();
        let keys = keyring(dir.path());
        let stored = keys.seal_secret(&secret());
        let text = stored.to_string();
        for plaintext in ["aHVudGVyMg", "admin", "last-applied", "password"] {
            assert!(!text.contains(plaintext), "{plaintext} in {text}");
        }
        assert_eq!(stored["metadata"]["labels"]["app"], "web");
        assert_eq!(stored["metadata"]["resourceVersion"], "7");
        assert_eq!(stored["type"], "Opaque");
        assert_eq!(
            Keyring::secret_key_id(&stored),
            Some(keys.primary_id().as_str())
        );
        assert_eq!(keys.unseal_secret(stored).unwrap(), secret());
        // Two seals of one Secret share no ciphertext.
        assert_ne!(keys.seal_secret(&secret()), keys.seal_secret(&secret()));
    }

    #[test]
    fn a_secrets_ciphertext_opens_only_for_that_secret() {
        let dir = tempfile::tempdir().unwrap();
        let keys = keyring(dir.path());
        let stored = keys.seal_secret(&secret());
        let mut moved = stored.clone();
        moved["metadata"]["name"] = json!("other");
        let error = keys.unseal_secret(moved).unwrap_err().to_string();
        assert_eq!(
            error,
            "secret shop/other cannot be decrypted: the ciphertext does not open for this object"
        );
        let mut tampered = stored;
        let data = tampered[SEALED_FIELD]["data"].as_str().unwrap().to_owned();
        let mut bytes = STANDARD.decode(data).unwrap();
        *bytes.last_mut().unwrap() ^= 1;
        tampered[SEALED_FIELD]["data"] = json!(STANDARD.encode(bytes));
        assert!(keys.unseal_secret(tampered).is_err());
    }

    #[test]
    fn a_secret_stored_before_encryption_reads_as_it_is() {
        let dir = tempfile::tempdir().unwrap();
        let keys = keyring(dir.path());
        assert_eq!(keys.unseal_secret(secret()).unwrap(), secret());
        assert_eq!(Keyring::secret_key_id(&secret()), None);
    }

    #[test]
    fn after_a_rotation_old_values_open_and_new_ones_use_the_new_key() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keys");
        Keyring::create_file(&path).unwrap();
        let keys = Keyring::load(&path).unwrap();
        let old_id = keys.primary_id();
        let old = keys.seal("cluster/proxy-key", b"k");
        let new_id = Keyring::add_primary(&path).unwrap();
        // A value under a key this process has not read yet makes it reread.
        let other = Keyring::load(&path).unwrap();
        let new = other.seal("cluster/proxy-key", b"n");
        assert_eq!(Keyring::key_of(&new), Some(new_id.clone()));
        assert_eq!(keys.unseal("v", "cluster/proxy-key", &new).unwrap(), b"n");
        assert_eq!(keys.primary_id(), new_id);
        assert_eq!(keys.unseal("v", "cluster/proxy-key", &old).unwrap(), b"k");
        // Pruning keeps the first key and those still named.
        assert_eq!(
            Keyring::prune_file(&path, &[]).unwrap(),
            vec![old_id.clone()]
        );
        let pruned = Keyring::load(&path).unwrap();
        assert_eq!(
            pruned
                .unseal("secret x", "cluster/proxy-key", &old)
                .unwrap_err()
                .to_string(),
            format!(
                "secret x is encrypted under key {old_id}, which the encryption key file does not hold; add that key back to the file"
            )
        );
    }

    #[test]
    fn key_files_are_checked() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keys");
        Keyring::create_file(&path).unwrap();
        assert!(!Keyring::create_file(&path).unwrap(), "kept, not replaced");
        use std::os::unix::fs::PermissionsExt as _;
        assert_eq!(
            std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
        let write = |text: &str, mode: u32| {
            std::fs::write(&path, text).unwrap();
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
            Keyring::load(&path).unwrap_err().to_string()
        };
        let key = [1u8; KEY_LEN];
        let line = format!("{} {}\n", key_id(&key), STANDARD.encode(key));
        let shown = path.display();
        assert_eq!(
            write(&line, 0o644),
            format!(
                "encryption key file {shown}: is readable by others than its owner (mode 0644); chmod 600 it"
            )
        );
        assert_eq!(
            write("# nothing\n", 0o600),
            format!("encryption key file {shown}: holds no key")
        );
        assert_eq!(
            write(&format!("kbad {}\n", STANDARD.encode(key)), 0o600),
            format!(
                "encryption key file {shown}: line 1: the id kbad does not belong to this key (it is {})",
                key_id(&key)
            )
        );
        assert_eq!(
            write("k1 c2hvcnQ=\n", 0o600),
            format!("encryption key file {shown}: line 1: the key is not 32 bytes")
        );
        assert_eq!(
            write("justone\n", 0o600),
            format!("encryption key file {shown}: line 1: expected `ID BASE64-KEY`")
        );
    }

    #[test]
    fn a_changed_file_is_reread_and_a_broken_one_keeps_the_keys_held() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keys");
        Keyring::create_file(&path).unwrap();
        let keys = Keyring::load(&path).unwrap();
        assert!(!keys.reload_if_changed().unwrap());
        let first = keys.primary_id();
        let next = Keyring::add_primary(&path).unwrap();
        assert!(keys.reload_if_changed().unwrap());
        assert_eq!(keys.primary_id(), next);
        std::fs::write(&path, "garbage\n").unwrap();
        assert!(keys.reload_if_changed().is_err());
        assert_eq!(keys.primary_id(), next);
        assert_ne!(first, next);
    }
}
