//! Repository encryption (docs/REPOSITORY.md §10): a random master key wrapped by a key derived from the
//! passphrase with Argon2id (parameters recorded in `rescue-repo`); every chunk object's payload and
//! every snapshot file sealed with XChaCha20-Poly1305 under the master key; chunk objects named by a
//! keyed BLAKE3 of the chunk's hash, so names reveal nothing about contents and nobody without the key
//! can test whether the repository holds a given file.

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{Key, XChaCha20Poly1305, XNonce};
use serde::{Deserialize, Serialize};

use crate::image::Hash;

/// The `encryption` value of an encrypted repository.
pub const SCHEME: &str = "xchacha20poly1305-argon2id";
/// Bytes a sealed message has more than its plaintext: the nonce and the tag.
pub const OVERHEAD: usize = NONCE_LEN + 16;
const NONCE_LEN: usize = 24;
/// Argon2id cost of new repositories: 64 MiB and 3 passes (about 0.3 s on the development machine, 1-2 s
/// on a slow one); the rescue system has that much memory whatever the machine.
const M_KIB: u32 = 64 * 1024;
const T_COST: u32 = 3;
const P_COST: u32 = 1;

/// The wrapped master key, as `rescue-repo` keeps it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeySlot {
    /// `argon2id`.
    pub kdf: String,
    pub m_kib: u32,
    pub t_cost: u32,
    pub p_cost: u32,
    /// Base64.
    pub salt: String,
    /// Base64 of the nonce and the sealed 64-byte master key.
    pub wrapped: String,
}

/// The master key: its halves seal data and name chunks.
#[derive(Clone)]
pub struct Keys {
    seal: [u8; 32],
    name: [u8; 32],
}

impl std::fmt::Debug for Keys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Keys(..)")
    }
}

impl Drop for Keys {
    fn drop(&mut self) {
        // Not a guarantee (copies may exist), but the key does not linger in freed memory by us.
        self.seal.fill(0);
        self.name.fill(0);
    }
}

/// Why a sealed message could not be opened.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("it fails authentication: it was changed or damaged, or belongs elsewhere")]
pub struct Inauthentic;

fn random<const N: usize>() -> [u8; N] {
    let mut b = [0u8; N];
    // The kernel's random source; without it there is no safe key, and nothing may be written.
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut b)
        .unwrap_or_else(|_| panic!("the kernel's random number source failed"));
    b
}

fn derive(passphrase: &str, slot: &KeySlot) -> anyhow::Result<[u8; 32]> {
    if slot.kdf != "argon2id" {
        anyhow::bail!(
            "the key is wrapped with `{}`, which this program does not know",
            slot.kdf
        );
    }
    let salt = crate::units::base64_decode(&slot.salt)
        .ok_or_else(|| anyhow::anyhow!("the key's salt is not base64: rescue-repo is damaged"))?;
    let params =
        argon2::Params::new(slot.m_kib, slot.t_cost, slot.p_cost, Some(32)).map_err(|e| {
            anyhow::anyhow!("the key's Argon2 parameters are refused ({e}): rescue-repo is damaged")
        })?;
    let mut out = [0u8; 32];
    argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params)
        .hash_password_into(passphrase.as_bytes(), &salt, &mut out)
        .map_err(|e| anyhow::anyhow!("deriving the key from the passphrase: {e}"))?;
    Ok(out)
}

fn seal_with(key: &[u8; 32], msg: &[u8], aad: &[u8]) -> Vec<u8> {
    let cipher = XChaCha20Poly1305::new(&Key::from(*key));
    let nonce: [u8; NONCE_LEN] = random();
    let sealed = cipher
        .encrypt(&XNonce::from(nonce), Payload { msg, aad })
        .unwrap_or_else(|_| panic!("XChaCha20-Poly1305 refused a message under 256 GiB"));
    let mut out = Vec::with_capacity(NONCE_LEN + sealed.len());
    out.extend_from_slice(&nonce);
    out.extend_from_slice(&sealed);
    out
}

fn open_with(key: &[u8; 32], sealed: &[u8], aad: &[u8]) -> Result<Vec<u8>, Inauthentic> {
    if sealed.len() < OVERHEAD {
        return Err(Inauthentic);
    }
    let (nonce, msg) = sealed.split_at(NONCE_LEN);
    let nonce: [u8; NONCE_LEN] = nonce.try_into().map_err(|_| Inauthentic)?;
    XChaCha20Poly1305::new(&Key::from(*key))
        .decrypt(&XNonce::from(nonce), Payload { msg, aad })
        .map_err(|_| Inauthentic)
}

/// What binds the wrapped key to its repository.
fn slot_aad(repo_id: &str) -> Vec<u8> {
    format!("rescue repository key v1 {repo_id}").into_bytes()
}

impl Keys {
    /// A new master key, wrapped with `passphrase` for the repository `repo_id`.
    pub fn create(passphrase: &str, repo_id: &str) -> anyhow::Result<(Keys, KeySlot)> {
        let keys = Keys {
            seal: random(),
            name: random(),
        };
        let salt: [u8; 16] = random();
        let mut slot = KeySlot {
            kdf: "argon2id".into(),
            m_kib: M_KIB,
            t_cost: T_COST,
            p_cost: P_COST,
            salt: crate::units::base64(&salt),
            wrapped: String::new(),
        };
        let kek = derive(passphrase, &slot)?;
        let mut master = [0u8; 64];
        master[..32].copy_from_slice(&keys.seal);
        master[32..].copy_from_slice(&keys.name);
        slot.wrapped = crate::units::base64(&seal_with(&kek, &master, &slot_aad(repo_id)));
        master.fill(0);
        Ok((keys, slot))
    }

    /// The master key of `slot`, if `passphrase` is the one it was wrapped with.
    pub fn unlock(passphrase: &str, slot: &KeySlot, repo_id: &str) -> anyhow::Result<Option<Keys>> {
        let kek = derive(passphrase, slot)?;
        let wrapped = crate::units::base64_decode(&slot.wrapped).ok_or_else(|| {
            anyhow::anyhow!("the wrapped key is not base64: rescue-repo is damaged")
        })?;
        let Ok(mut master) = open_with(&kek, &wrapped, &slot_aad(repo_id)) else {
            return Ok(None);
        };
        if master.len() != 64 {
            anyhow::bail!(
                "the wrapped key has {} bytes, not 64: rescue-repo is damaged",
                master.len()
            );
        }
        let mut keys = Keys {
            seal: [0; 32],
            name: [0; 32],
        };
        keys.seal.copy_from_slice(&master[..32]);
        keys.name.copy_from_slice(&master[32..]);
        master.fill(0);
        Ok(Some(keys))
    }

    /// The object name of the chunk whose plaintext hash is `hash`: a keyed BLAKE3 of it.
    pub fn chunk_id(&self, hash: &Hash) -> Hash {
        let mut h = blake3::Hasher::new_keyed(&self.name);
        h.update(b"rescue chunk id v1");
        h.update(&hash.0);
        Hash(*h.finalize().as_bytes())
    }

    /// A chunk payload sealed for the object `id`: the object's name, the chunk's compression and length
    /// are authenticated with it, so a payload moved to another object, or relabelled, fails to open.
    pub fn seal_chunk(
        &self,
        id: &Hash,
        compression: u8,
        uncompressed_len: u32,
        payload: &[u8],
    ) -> Vec<u8> {
        seal_with(
            &self.seal,
            payload,
            &chunk_aad(id, compression, uncompressed_len),
        )
    }

    pub fn open_chunk(
        &self,
        id: &Hash,
        compression: u8,
        uncompressed_len: u32,
        sealed: &[u8],
    ) -> Result<Vec<u8>, Inauthentic> {
        open_with(
            &self.seal,
            sealed,
            &chunk_aad(id, compression, uncompressed_len),
        )
    }

    /// A snapshot file's body sealed, bound to its file name's id and the repository.
    pub fn seal_snapshot(&self, body: &[u8], aad: &[u8]) -> Vec<u8> {
        seal_with(&self.seal, body, aad)
    }

    pub fn open_snapshot(&self, sealed: &[u8], aad: &[u8]) -> Result<Vec<u8>, Inauthentic> {
        open_with(&self.seal, sealed, aad)
    }
}

fn chunk_aad(id: &Hash, compression: u8, uncompressed_len: u32) -> Vec<u8> {
    let mut aad = b"rescue chunk v1".to_vec();
    aad.extend_from_slice(&id.0);
    aad.push(compression);
    aad.extend_from_slice(&uncompressed_len.to_le_bytes());
    aad
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn the_key_opens_with_its_passphrase_only() {
        let (keys, slot) = Keys::create("correct horse", "repo1").unwrap();
        let again = Keys::unlock("correct horse", &slot, "repo1")
            .unwrap()
            .unwrap();
        assert_eq!(
            keys.chunk_id(&Hash([1; 32])),
            again.chunk_id(&Hash([1; 32]))
        );
        assert!(Keys::unlock("wrong horse", &slot, "repo1")
            .unwrap()
            .is_none());
        // Another repository's slot: the key is bound to its id.
        assert!(Keys::unlock("correct horse", &slot, "repo2")
            .unwrap()
            .is_none());
        assert!(!format!("{keys:?}").contains(&format!("{:?}", keys.seal)));
    }

    #[test]
    fn sealed_chunks_fail_when_changed_or_moved() {
        let (keys, _) = Keys::create("pw", "r").unwrap();
        let id = keys.chunk_id(&Hash([7; 32]));
        let other = keys.chunk_id(&Hash([8; 32]));
        assert_ne!(id, other);
        assert_ne!(id, Hash([7; 32]));
        let sealed = keys.seal_chunk(&id, 1, 100, b"compressed bytes");
        assert_eq!(sealed.len(), b"compressed bytes".len() + OVERHEAD);
        assert_eq!(
            keys.open_chunk(&id, 1, 100, &sealed).unwrap(),
            b"compressed bytes"
        );
        assert!(
            keys.open_chunk(&other, 1, 100, &sealed).is_err(),
            "moved to another name"
        );
        assert!(keys.open_chunk(&id, 0, 100, &sealed).is_err(), "relabelled");
        let mut flipped = sealed.clone();
        flipped[30] ^= 1;
        assert!(keys.open_chunk(&id, 1, 100, &flipped).is_err());
        assert!(keys.open_chunk(&id, 1, 100, &sealed[..20]).is_err());
        // Two seals of the same chunk differ (random nonces).
        assert_ne!(sealed, keys.seal_chunk(&id, 1, 100, b"compressed bytes"));
    }
}
