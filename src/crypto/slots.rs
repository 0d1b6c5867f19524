//! Key slots: the master key of an encrypted store, wrapped by passphrases.
//!
//! `STORE/keys` (and the same file in its replica) is JSON:
//! `{"version": 1, "slots": [Slot, ...]}`. A slot holds the argon2id
//! parameters it was made with, its 16-byte salt, and the master key
//! sealed (AES-256-GCM, zero nonce: the key-encryption key is argon2id of
//! the passphrase and a salt drawn for this slot alone, so it seals one
//! message) with the slot's id and parameters as associated data. Any one
//! slot opens the store; the last one cannot be removed.

use super::{MasterKey, passphrase};
use crate::error::{Error, Result};
use aes_gcm::aead::{AeadInOut, KeyInit};
use aes_gcm::{Aes256Gcm, Nonce, Tag};
use serde::{Deserialize, Serialize};
use std::path::Path;
use zeroize::Zeroizing;

pub const KEYS_FILE: &str = "keys";
const KEYS_VERSION: u32 = 1;

/// argon2id cost of new slots: 64 MiB, 3 passes, one lane (about 0.15 s
/// here); `REVFS_KDF_MEMORY_KIB` lowers it (tests make many stores).
const DEFAULT_M_KIB: u32 = 64 << 10;
const DEFAULT_T: u32 = 3;

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Slot {
    pub id: u32,
    pub created: String,
    /// "argon2id" (version 0x13).
    pub kdf: String,
    pub m_kib: u32,
    pub t_cost: u32,
    pub p_cost: u32,
    /// Hex of the 16-byte KDF salt.
    pub salt: String,
    /// Hex of the sealed master key (32 bytes and a 16-byte tag).
    pub wrapped: String,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct KeyFile {
    pub version: u32,
    pub slots: Vec<Slot>,
}

fn kek(pass: &[u8], salt: &[u8], m: u32, t: u32, p: u32) -> Result<Zeroizing<[u8; 32]>> {
    let params = argon2::Params::new(m, t, p, Some(32))
        .map_err(|e| Error::Store(format!("key slot: bad argon2id parameters: {e}")))?;
    let a = argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params);
    let mut out = Zeroizing::new([0u8; 32]);
    a.hash_password_into(pass, salt, &mut out[..])
        .map_err(|e| Error::Store(format!("key slot: argon2id failed: {e}")))?;
    Ok(out)
}

fn slot_aad(id: u32, m: u32, t: u32, p: u32) -> Vec<u8> {
    let mut a = b"revfs key slot v1".to_vec();
    for v in [id, m, t, p] {
        a.extend_from_slice(&v.to_le_bytes());
    }
    a
}

impl Slot {
    fn make(id: u32, master: &MasterKey, pass: &[u8]) -> Result<Slot> {
        let m = std::env::var("REVFS_KDF_MEMORY_KIB")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(DEFAULT_M_KIB)
            .max(8);
        let (t, p) = (DEFAULT_T, 1);
        let mut salt = [0u8; 16];
        super::random_bytes(&mut salt)?;
        let k = kek(pass, &salt, m, t, p)?;
        let mut buf = master.0.to_vec();
        let tag = Aes256Gcm::new((&*k).into())
            .encrypt_inout_detached(
                &Nonce::default(),
                &slot_aad(id, m, t, p),
                (&mut buf[..]).into(),
            )
            .map_err(|_| Error::Store("key slot: sealing failed".into()))?;
        buf.extend_from_slice(&tag);
        Ok(Slot {
            id,
            created: crate::timefmt::rfc3339(crate::format::Time::now()),
            kdf: "argon2id".into(),
            m_kib: m,
            t_cost: t,
            p_cost: p,
            salt: hex::encode(salt),
            wrapped: hex::encode(buf),
        })
    }

    /// The master key, if `pass` opens this slot.
    fn open(&self, pass: &[u8]) -> Result<Option<MasterKey>> {
        if self.kdf != "argon2id" {
            return Err(Error::Store(format!(
                "key slot {}: unknown KDF {:?}",
                self.id, self.kdf
            )));
        }
        let bad = || Error::Store(format!("key slot {}: damaged", self.id));
        let salt = hex::decode(&self.salt).map_err(|_| bad())?;
        let wrapped = hex::decode(&self.wrapped).map_err(|_| bad())?;
        if wrapped.len() != 48 || salt.len() < 8 {
            return Err(bad());
        }
        let k = kek(pass, &salt, self.m_kib, self.t_cost, self.p_cost)?;
        let mut key = Zeroizing::new(wrapped[..32].to_vec());
        let aad = slot_aad(self.id, self.m_kib, self.t_cost, self.p_cost);
        let tag = Tag::try_from(&wrapped[32..]).map_err(|_| bad())?;
        let opened = Aes256Gcm::new((&*k).into()).decrypt_inout_detached(
            &Nonce::default(),
            &aad,
            (&mut key[..]).into(),
            &tag,
        );
        if opened.is_err() {
            return Ok(None);
        }
        let mut m = Zeroizing::new([0u8; 32]);
        m.copy_from_slice(&key);
        Ok(Some(MasterKey(m)))
    }
}

impl KeyFile {
    /// A key file with one slot for `pass`.
    pub fn new(master: &MasterKey, pass: &[u8]) -> Result<KeyFile> {
        Ok(KeyFile {
            version: KEYS_VERSION,
            slots: vec![Slot::make(1, master, pass)?],
        })
    }

    pub fn read(dir: &Path) -> Result<KeyFile> {
        let path = dir.join(KEYS_FILE);
        let bytes = std::fs::read(&path).map_err(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                Error::Store(format!(
                    "{}: the store is encrypted but its key file is missing; copy `keys` \
                     from its replica",
                    path.display()
                ))
            } else {
                Error::IoAt {
                    path: path.clone(),
                    source: e,
                }
            }
        })?;
        KeyFile::decode(&bytes, &path.display().to_string())
    }

    /// The key file in `bytes` (`path` names it in messages).
    pub fn decode(bytes: &[u8], path: &str) -> Result<KeyFile> {
        let f: KeyFile = serde_json::from_slice(bytes)
            .map_err(|e| Error::Store(format!("{path}: damaged key file ({e})")))?;
        if f.version > KEYS_VERSION {
            return Err(Error::Store(format!(
                "{path}: key file version {} is newer than this revfs reads ({KEYS_VERSION})",
                f.version
            )));
        }
        Ok(f)
    }

    /// Writes the key file atomically (temp, fsync, rename, fsync dir).
    pub fn write(&self, dir: &Path) -> Result<()> {
        let bytes = self.encode()?;
        crate::sys::publish(&dir.join(KEYS_FILE), |f| {
            std::io::Write::write_all(f, &bytes)
        })
    }

    /// The bytes of the key file.
    pub fn encode(&self) -> Result<Vec<u8>> {
        let mut bytes = serde_json::to_vec_pretty(self).map_err(|e| Error::Store(e.to_string()))?;
        bytes.push(b'\n');
        Ok(bytes)
    }

    /// The master key and the id of the slot `pass` opens.
    pub fn unlock(&self, pass: &[u8], store: &Path) -> Result<(MasterKey, u32)> {
        for s in &self.slots {
            if let Some(m) = s.open(pass)? {
                return Ok((m, s.id));
            }
        }
        Err(Error::WrongPassphrase(store.to_path_buf()))
    }

    /// Adds a slot for `pass`; its id.
    pub fn add(&mut self, master: &MasterKey, pass: &[u8]) -> Result<u32> {
        let id = self.slots.iter().map(|s| s.id).max().unwrap_or(0) + 1;
        self.slots.push(Slot::make(id, master, pass)?);
        Ok(id)
    }

    /// Removes slot `id`; the last slot stays.
    pub fn remove(&mut self, id: u32) -> Result<()> {
        if !self.slots.iter().any(|s| s.id == id) {
            return Err(Error::Store(format!("no key slot {id}")));
        }
        if self.slots.len() == 1 {
            return Err(Error::Store(format!(
                "slot {id} is the last key slot; add another before removing it"
            )));
        }
        self.slots.retain(|s| s.id != id);
        Ok(())
    }

    /// Replaces slot `id` by one for `pass` (same id).
    pub fn rewrap(&mut self, id: u32, master: &MasterKey, pass: &[u8]) -> Result<()> {
        let s = self
            .slots
            .iter_mut()
            .find(|s| s.id == id)
            .ok_or_else(|| Error::Store(format!("no key slot {id}")))?;
        *s = Slot::make(id, master, pass)?;
        Ok(())
    }
}

/// The keys of the store (or replica) at `dir`, whose config names
/// `cipher`: plain when it names none; otherwise the passphrase is asked
/// for (`passphrase::current`) and must open one of its key slots.
pub fn unlock(dir: &Path, cipher: Option<&str>) -> Result<super::Crypto> {
    unlock_keeping(dir, cipher).map(|(c, _)| c)
}

/// [`unlock`], and the passphrase that opened the store (none for a
/// plain store), for a process that hands it on (a detached daemon).
pub fn unlock_keeping(
    dir: &Path,
    cipher: Option<&str>,
) -> Result<(super::Crypto, Option<Zeroizing<String>>)> {
    let Some(cipher) = cipher else {
        return Ok((super::Crypto::plain(), None));
    };
    if cipher != super::CIPHER {
        return Err(Error::Store(format!(
            "{}: unknown cipher {cipher:?} (this revfs knows {:?})",
            dir.display(),
            super::CIPHER
        )));
    }
    let keys = KeyFile::read(dir)?;
    let (crypto, pass) = unlock_file(&keys, dir)?;
    Ok((crypto, Some(pass)))
}

/// The keys `keys` holds for the store `store` (asking its passphrase).
pub fn unlock_file(keys: &KeyFile, store: &Path) -> Result<(super::Crypto, Zeroizing<String>)> {
    let pass = passphrase::current(store)?;
    let (master, _) = keys.unlock(pass.as_bytes(), store)?;
    Ok((super::Crypto::new(&master)?, pass))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_open_with_their_passphrase_only() {
        // SAFETY of the test: a small KDF cost keeps it fast.
        let m = MasterKey::random().unwrap();
        let mut f = KeyFile {
            version: 1,
            slots: vec![Slot::make(1, &m, b"one").unwrap()],
        };
        let p = Path::new("/s");
        assert_eq!(*f.unlock(b"one", p).unwrap().0.0, *m.0);
        assert!(matches!(
            f.unlock(b"two", p),
            Err(Error::WrongPassphrase(_))
        ));
        let id = f.add(&m, b"two").unwrap();
        assert_eq!(f.unlock(b"two", p).unwrap().1, id);
        f.remove(1).unwrap();
        assert!(f.unlock(b"one", p).is_err());
        assert!(f.remove(id).is_err(), "the last slot stays");
        f.rewrap(id, &m, b"three").unwrap();
        assert!(f.unlock(b"two", p).is_err());
        assert_eq!(*f.unlock(b"three", p).unwrap().0.0, *m.0);
        // A slot whose parameters were edited no longer opens.
        f.slots[0].t_cost += 1;
        assert!(f.unlock(b"three", p).is_err());
    }
}
