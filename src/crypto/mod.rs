//! Encryption at rest: the keys of an encrypted store and what they seal.
//!
//! One random 256-bit master key per store, kept only wrapped in key slots
//! (`slots`). Every other key is derived from it with BLAKE3's key
//! derivation (a context string per use), so one key never serves two
//! purposes:
//!
//! * **object ids**: keyed BLAKE3 of the object's bytes (kind-prefixed as in
//!   plain stores), so dedup works inside the store and nobody without the
//!   key can compute the id of a known chunk;
//! * **chunk boundaries**: a gear table of 256 keyed words for FastCDC
//!   (`chunker`), so the lengths of the chunks of a known file cannot be
//!   predicted either;
//! * **records** (pack payloads) and **metadata** (catalog values, replica
//!   head/name/pruned files): AES-256-GCM. Each sealed value carries a
//!   16-byte salt; its key is keyed BLAKE3 (data or metadata key, salt) and
//!   its nonce is zero. A key therefore seals exactly one message unless
//!   two salts collide; salts are 128-bit outputs of a PRF (keyed BLAKE3
//!   of a per-session random key and a counter), so a collision takes about
//!   2^64 sealed values. Nothing depends on a counter surviving a crash.
//! * **names**: keyed BLAKE3 of directory entry names, snapshot names and
//!   paths, for the catalog keys that must be found by name.
//!
//! The associated data of each seal is where the value lives (a record's
//! header, a catalog key, a file name), so a sealed value moved elsewhere
//! fails to open as surely as a flipped bit does.

pub mod passphrase;
pub mod slots;

use crate::error::{Error, Result};
use crate::ids::{ObjectId, ObjectKind};
use aes_gcm::aead::{AeadInOut, KeyInit};
use aes_gcm::{Aes256Gcm, Nonce, Tag};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use zeroize::Zeroizing;

/// The `cipher` of an encrypted store's config.
pub const CIPHER: &str = "aes-256-gcm+blake3";
/// Bytes a seal adds: the salt before, the tag after.
pub const OVERHEAD: usize = SALT_LEN + TAG_LEN;
const SALT_LEN: usize = 16;
const TAG_LEN: usize = 16;

/// A store's master key (wiped from memory when dropped).
#[derive(Clone)]
pub struct MasterKey(pub(crate) Zeroizing<[u8; 32]>);

impl MasterKey {
    /// A new key from the OS random source.
    pub fn random() -> Result<MasterKey> {
        let mut k = Zeroizing::new([0u8; 32]);
        random_bytes(&mut k[..])?;
        Ok(MasterKey(k))
    }
}

/// Fills `buf` from the OS random source.
pub fn random_bytes(buf: &mut [u8]) -> Result<()> {
    getrandom::fill(buf).map_err(|e| Error::Store(format!("the OS random source failed: {e}")))
}

/// What a sealed value is: each has its own key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Domain {
    /// Pack records (chunks, manifests, trees, commits).
    Record,
    /// Catalog values and the replica's small files.
    Meta,
}

struct Keys {
    id: Zeroizing<[u8; 32]>,
    record: Zeroizing<[u8; 32]>,
    meta: Zeroizing<[u8; 32]>,
    names: Zeroizing<[u8; 32]>,
    gear: Box<[u64; 256]>,
    gear_ls: Box<[u64; 256]>,
    /// Per-session PRF key and counter that make salts.
    salt_key: Zeroizing<[u8; 32]>,
    salt_no: AtomicU64,
}

/// How a store protects what it writes: nothing (plain stores), or the
/// keys derived from its master key. Cheap to clone.
#[derive(Clone, Default)]
pub struct Crypto(Option<Arc<Keys>>);

impl std::fmt::Debug for Crypto {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_some() {
            "Crypto(encrypted)"
        } else {
            "Crypto(plain)"
        })
    }
}

fn derive(context: &str, master: &MasterKey) -> Zeroizing<[u8; 32]> {
    Zeroizing::new(blake3::derive_key(context, &master.0[..]))
}

impl Crypto {
    /// A plain store: ids are BLAKE3, nothing is sealed.
    pub fn plain() -> Crypto {
        Crypto(None)
    }

    /// The keys of an encrypted store with this master key.
    pub fn new(master: &MasterKey) -> Result<Crypto> {
        let gear_key = derive("revfs 2026-12 chunk boundaries", master);
        let mut words = Zeroizing::new([0u8; 256 * 8]);
        blake3::Hasher::new_keyed(&gear_key)
            .finalize_xof()
            .fill(&mut words[..]);
        let mut gear = Box::new([0u64; 256]);
        let mut gear_ls = Box::new([0u64; 256]);
        for (i, w) in words.chunks_exact(8).enumerate() {
            let mut b = [0u8; 8];
            b.copy_from_slice(w);
            gear[i] = u64::from_le_bytes(b);
            gear_ls[i] = gear[i] << 1;
        }
        let mut salt_key = Zeroizing::new([0u8; 32]);
        random_bytes(&mut salt_key[..])?;
        Ok(Crypto(Some(Arc::new(Keys {
            id: derive("revfs 2026-12 object ids", master),
            record: derive("revfs 2026-12 pack records", master),
            meta: derive("revfs 2026-12 metadata", master),
            names: derive("revfs 2026-12 names", master),
            gear,
            gear_ls,
            salt_key,
            salt_no: AtomicU64::new(0),
        }))))
    }

    pub fn is_encrypted(&self) -> bool {
        self.0.is_some()
    }

    /// The id of `data` as an object of `kind`: BLAKE3, keyed in an
    /// encrypted store. Chunks hash their bytes alone (identical content
    /// dedups across files); other kinds hash a kind byte first, so a tree
    /// is never mistaken for a chunk with the same bytes.
    pub fn object_id(&self, kind: ObjectKind, data: &[u8]) -> ObjectId {
        let mut h = match &self.0 {
            None => blake3::Hasher::new(),
            Some(k) => blake3::Hasher::new_keyed(&k.id),
        };
        if kind != ObjectKind::Chunk {
            h.update(&[kind as u8]);
        }
        h.update(data);
        ObjectId(*h.finalize().as_bytes())
    }

    /// The keyed gear tables (word, word << 1) of an encrypted store.
    pub fn gear(&self) -> Option<(&[u64; 256], &[u64; 256])> {
        self.0.as_ref().map(|k| (&*k.gear, &*k.gear_ls))
    }

    /// A name as an encrypted store's catalog keys it: keyed BLAKE3 of
    /// `scope` (what the name is) and the name's bytes.
    pub fn name_key(&self, scope: &[u8], name: &[u8]) -> Option<[u8; 32]> {
        self.0.as_ref().map(|k| {
            let mut h = blake3::Hasher::new_keyed(&k.names);
            h.update(&(scope.len() as u64).to_le_bytes());
            h.update(scope);
            h.update(name);
            *h.finalize().as_bytes()
        })
    }

    fn key_of(k: &Keys, domain: Domain, salt: &[u8]) -> Zeroizing<[u8; 32]> {
        let base = match domain {
            Domain::Record => &k.record,
            Domain::Meta => &k.meta,
        };
        Zeroizing::new(*blake3::keyed_hash(base, salt).as_bytes())
    }

    /// `plain` sealed (salt, ciphertext, tag) with `aad` bound to it; in a
    /// plain store, `plain` itself.
    pub fn seal(&self, domain: Domain, aad: &[u8], plain: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        self.seal_into(domain, aad, plain, &mut out);
        out
    }

    /// Appends `plain` sealed (as [`Crypto::seal`] makes it) to `out`.
    pub fn seal_into(&self, domain: Domain, aad: &[u8], plain: &[u8], out: &mut Vec<u8>) {
        let Some(k) = &self.0 else {
            out.extend_from_slice(plain);
            return;
        };
        let no = k.salt_no.fetch_add(1, Ordering::Relaxed);
        let salt_hash = blake3::keyed_hash(&k.salt_key, &no.to_le_bytes());
        let salt = &salt_hash.as_bytes()[..SALT_LEN];
        out.reserve(plain.len() + OVERHEAD);
        out.extend_from_slice(salt);
        let body = out.len();
        out.extend_from_slice(plain);
        let key = Self::key_of(k, domain, salt);
        let tag = Aes256Gcm::new((&*key).into())
            .encrypt_inout_detached(&Nonce::default(), aad, (&mut out[body..]).into())
            .expect("AES-GCM seals any message under 64 GiB");
        out.extend_from_slice(&tag);
    }

    /// The bytes `seal` sealed, if `sealed` is authentic under `aad`; in a
    /// plain store, `sealed` itself. `what` names the value in the error.
    pub fn open(&self, domain: Domain, aad: &[u8], sealed: &[u8], what: &str) -> Result<Vec<u8>> {
        let Some(k) = &self.0 else {
            return Ok(sealed.to_vec());
        };
        let fail = || {
            Error::corrupt(
                what.to_string(),
                "authentication failed (damaged or forged)",
            )
        };
        if sealed.len() < OVERHEAD {
            return Err(fail());
        }
        let (salt, rest) = sealed.split_at(SALT_LEN);
        let (body, tag) = rest.split_at(rest.len() - TAG_LEN);
        let tag = Tag::try_from(tag).map_err(|_| fail())?;
        let mut out = body.to_vec();
        let key = Self::key_of(k, domain, salt);
        Aes256Gcm::new((&*key).into())
            .decrypt_inout_detached(&Nonce::default(), aad, (&mut out[..]).into(), &tag)
            .map_err(|_| fail())?;
        Ok(out)
    }

    /// Bytes `seal` adds to a value.
    pub fn overhead(&self) -> usize {
        if self.0.is_some() { OVERHEAD } else { 0 }
    }
}

/// A keystream for one scratch file (a staging file), under a random key
/// that lives only in memory: what the file holds is unreadable once the
/// process is gone, and nothing of it is ever needed after a crash.
pub struct Scratch {
    key: Zeroizing<[u8; 32]>,
}

impl Scratch {
    pub fn new() -> Result<Scratch> {
        let mut key = Zeroizing::new([0u8; 32]);
        random_bytes(&mut key[..])?;
        Ok(Scratch { key })
    }

    /// XORs `buf` with the keystream at file offset `offset`.
    pub fn apply(&self, offset: u64, buf: &mut [u8]) {
        use ctr::cipher::{KeyIvInit, StreamCipher, StreamCipherSeek};
        let mut c = ctr::Ctr128BE::<aes::Aes256>::new((&*self.key).into(), &Default::default());
        c.seek(offset);
        c.apply_keystream(buf);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seal_opens_only_untouched_and_in_place() {
        let c = Crypto::new(&MasterKey::random().unwrap()).unwrap();
        let s = c.seal(Domain::Meta, b"key-a", b"secret value");
        assert!(!s.windows(6).any(|w| w == b"secret"));
        assert_eq!(
            c.open(Domain::Meta, b"key-a", &s, "v").unwrap(),
            b"secret value"
        );
        assert!(c.open(Domain::Meta, b"key-b", &s, "v").is_err());
        assert!(c.open(Domain::Record, b"key-a", &s, "v").is_err());
        for i in 0..s.len() * 8 {
            let mut t = s.clone();
            t[i / 8] ^= 1 << (i % 8);
            assert!(c.open(Domain::Meta, b"key-a", &t, "v").is_err(), "bit {i}");
        }
        let other = Crypto::new(&MasterKey::random().unwrap()).unwrap();
        assert!(other.open(Domain::Meta, b"key-a", &s, "v").is_err());
        // The same value sealed twice looks different.
        assert_ne!(s, c.seal(Domain::Meta, b"key-a", b"secret value"));
    }

    #[test]
    fn ids_are_keyed_and_stable_per_key() {
        let m = MasterKey::random().unwrap();
        let (a, b) = (Crypto::new(&m).unwrap(), Crypto::new(&m).unwrap());
        let plain = Crypto::plain();
        let id = a.object_id(ObjectKind::Chunk, b"chunk");
        assert_eq!(id, b.object_id(ObjectKind::Chunk, b"chunk"));
        assert_ne!(id, plain.object_id(ObjectKind::Chunk, b"chunk"));
        assert_eq!(
            plain.object_id(ObjectKind::Chunk, b"chunk").0,
            *blake3::hash(b"chunk").as_bytes()
        );
        let other = Crypto::new(&MasterKey::random().unwrap()).unwrap();
        assert_ne!(id, other.object_id(ObjectKind::Chunk, b"chunk"));
        assert_ne!(a.gear().unwrap().0, other.gear().unwrap().0);
    }

    #[test]
    fn scratch_keystream_is_seekable() {
        let s = Scratch::new().unwrap();
        let mut whole = vec![7u8; 1000];
        s.apply(0, &mut whole);
        let mut part = vec![7u8; 300];
        s.apply(333, &mut part);
        assert_eq!(part, whole[333..633]);
        s.apply(333, &mut part);
        assert_eq!(part, vec![7u8; 300]);
    }
}
