//! Access tokens for the Peer API.
//!
//! A token is `hoard_<id>_<secret>` (id: 8 hex digits, secret: 32 random
//! bytes in hex). The store keeps only the id, the scope, the BLAKE3 of the
//! secret and when it was made, in `tokens.json` (mode 0600) in the store
//! directory; the token itself is shown once, when it is created.
//!
//! Floor 2: may import `durable` and `error` only (the Peer server checks
//! tokens with it).

use crate::error::{Error, Result};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::RwLock;

#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Scope {
    Read,
    Write,
    /// Prune and dataset removal on the hub (admin ⊃ write ⊃ read).
    Admin,
}

impl std::fmt::Display for Scope {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Scope::Read => "read",
            Scope::Write => "write",
            Scope::Admin => "admin",
        })
    }
}

#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Entry {
    pub id: String,
    pub scope: Scope,
    /// BLAKE3 of the secret, hex.
    secret_hash: String,
    pub created_unix: u64,
    #[serde(default)]
    pub note: String,
}

pub struct Tokens {
    path: PathBuf,
    entries: RwLock<Vec<Entry>>,
}

const FILE: &str = "tokens.json";

impl Tokens {
    pub fn open(dir: &Path) -> Result<Tokens> {
        let path = dir.join(FILE);
        let entries = match std::fs::read_to_string(&path) {
            Ok(s) => serde_json::from_str(&s).map_err(|e| {
                Error::Invalid(format!(
                    "{} is malformed ({e}); fix or remove it (removing revokes every token)",
                    path.display()
                ))
            })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(Error::io("cannot read", &path, e)),
        };
        Ok(Tokens {
            path,
            entries: RwLock::new(entries),
        })
    }

    /// Makes a token; returns the token text (shown once) and its entry.
    pub fn create(&self, scope: Scope, note: &str) -> Result<(String, Entry)> {
        let mut rnd = [0u8; 36];
        std::fs::File::open("/dev/urandom")
            .and_then(|mut f| f.read_exact(&mut rnd))
            .map_err(|e| {
                Error::io(
                    "cannot read random bytes from",
                    Path::new("/dev/urandom"),
                    e,
                )
            })?;
        let id = hex::encode(&rnd[..4]);
        let secret = hex::encode(&rnd[4..]);
        let entry = Entry {
            id: id.clone(),
            scope,
            secret_hash: blake3::hash(secret.as_bytes()).to_hex().to_string(),
            created_unix: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0),
            note: note.to_string(),
        };
        let mut w = self.entries.write().unwrap_or_else(|e| e.into_inner());
        let mut next = w.clone();
        next.push(entry.clone());
        self.save(&next)?;
        *w = next;
        Ok((format!("hoard_{id}_{secret}"), entry))
    }

    pub fn list(&self) -> Vec<Entry> {
        self.entries
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Revokes token `id`; false when there is none.
    pub fn revoke(&self, id: &str) -> Result<bool> {
        let mut w = self.entries.write().unwrap_or_else(|e| e.into_inner());
        let next: Vec<Entry> = w.iter().filter(|e| e.id != id).cloned().collect();
        if next.len() == w.len() {
            return Ok(false);
        }
        self.save(&next)?;
        *w = next;
        Ok(true)
    }

    /// The scope of a presented token, if it is valid.
    pub fn check(&self, presented: &str) -> Option<Scope> {
        let rest = presented.strip_prefix("hoard_")?;
        let (id, secret) = rest.split_once('_')?;
        let hash = blake3::hash(secret.as_bytes());
        let r = self.entries.read().unwrap_or_else(|e| e.into_inner());
        r.iter()
            .find(|e| e.id == id)
            .filter(|e| {
                // blake3::Hash compares in constant time.
                hex::decode(&e.secret_hash)
                    .ok()
                    .and_then(|b| <[u8; 32]>::try_from(b).ok())
                    .is_some_and(|b| blake3::Hash::from(b) == hash)
            })
            .map(|e| e.scope)
    }

    fn save(&self, entries: &[Entry]) -> Result<()> {
        let text = serde_json::to_string_pretty(entries)
            .map_err(|e| Error::Invalid(format!("cannot encode tokens: {e}")))?;
        // Durably: a revoked token must not come back after a power loss.
        crate::durable::replace(&self.path, text.as_bytes(), 0o600)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_check_scope_survive_reopen_and_revoke() {
        let d = tempfile::tempdir().unwrap();
        let t = Tokens::open(d.path()).unwrap();
        let (r, re) = t.create(Scope::Read, "ci").unwrap();
        let (w, _) = t.create(Scope::Write, "").unwrap();
        assert_eq!(t.check(&r), Some(Scope::Read));
        assert_eq!(t.check(&w), Some(Scope::Write));
        for bad in [
            "",
            "hoard_",
            &r[..r.len() - 1],
            &format!("{r}0"),
            &w.replace("hoard_", "x_"),
        ] {
            assert_eq!(t.check(bad), None, "{bad}");
        }
        let text = std::fs::read_to_string(d.path().join(FILE)).unwrap();
        assert!(!text.contains(&r[15..]), "the secret is not stored");
        let t = Tokens::open(d.path()).unwrap();
        assert_eq!(t.check(&r), Some(Scope::Read));
        assert!(t.revoke(&re.id).unwrap());
        assert!(!t.revoke(&re.id).unwrap());
        assert_eq!(t.check(&r), None);
        assert_eq!(Tokens::open(d.path()).unwrap().check(&r), None);
    }
}
