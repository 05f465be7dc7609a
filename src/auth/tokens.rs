//! Bearer tokens: 256 random bits handed to the client, of which the server
//! keeps only the SHA-256. Each token is bound to the password hash it was
//! issued against, so a changed password or a removed user revokes it.
//!
//! Lookups go through a map keyed by the token's SHA-256. The map compares
//! keys with an early exit, which could at most tell an attacker how many
//! leading bytes of SHA-256(guess) match a stored hash; that says nothing
//! about any token (finding a guess whose hash shares a prefix gets no closer
//! to a preimage), so no constant-time comparison is needed on top.
//!
//! The table is bounded in total and per user: a user cannot crowd out other
//! users' tokens, and a full table evicts the caller's own oldest token first.

use std::collections::HashMap;
use std::time::Instant;

use crate::error::{Error, Result};

/// Tokens kept at once, and per user.
pub const MAX_TOKENS: usize = 65_536;
pub const MAX_TOKENS_PER_USER: usize = 64;

pub type Digest = [u8; 32];

pub fn sha256(data: &[u8]) -> Digest {
    let digest = ring::digest::digest(&ring::digest::SHA256, data);
    let mut out = [0u8; 32];
    out.copy_from_slice(digest.as_ref());
    out
}

#[derive(Debug, Clone)]
pub struct TokenEntry {
    pub user: String,
    /// SHA-256 of the user's password hash when the token was issued.
    pub credential: Digest,
    pub expires: Instant,
}

#[derive(Debug, Default)]
pub struct Tokens {
    by_hash: HashMap<Digest, TokenEntry>,
    per_user: HashMap<String, usize>,
}

impl Tokens {
    /// Stores a token's entry. Err(ResourceExhausted) only when the table is
    /// full of live tokens of other users.
    pub fn insert(&mut self, hash: Digest, entry: TokenEntry, now: Instant) -> Result<()> {
        if self.count(&entry.user) >= MAX_TOKENS_PER_USER {
            self.evict_oldest_of(&entry.user);
        }
        if self.by_hash.len() >= MAX_TOKENS {
            self.retain(|e| e.expires > now);
        }
        if self.by_hash.len() >= MAX_TOKENS && !self.evict_oldest_of(&entry.user) {
            return Err(Error::ResourceExhausted(format!(
                "the server holds {MAX_TOKENS} live login tokens: retry once some expire"
            )));
        }
        *self.per_user.entry(entry.user.clone()).or_default() += 1;
        self.by_hash.insert(hash, entry);
        Ok(())
    }

    /// The live entry for a token hash; an expired one is removed and
    /// reported as `Err(())`.
    pub fn get(&mut self, hash: &Digest, now: Instant) -> Option<Result<TokenEntry, ()>> {
        let entry = self.by_hash.get(hash)?;
        if entry.expires <= now {
            self.remove(hash);
            return Some(Err(()));
        }
        Some(Ok(entry.clone()))
    }

    pub fn remove(&mut self, hash: &Digest) {
        if let Some(entry) = self.by_hash.remove(hash) {
            self.forget_one(&entry.user);
        }
    }

    /// Keeps only the entries `keep` accepts.
    pub fn retain(&mut self, mut keep: impl FnMut(&TokenEntry) -> bool) {
        let per_user = &mut self.per_user;
        self.by_hash.retain(|_, e| {
            let kept = keep(e);
            if !kept {
                if let Some(n) = per_user.get_mut(&e.user) {
                    *n = n.saturating_sub(1);
                }
            }
            kept
        });
        self.per_user.retain(|_, n| *n > 0);
    }

    pub fn count(&self, user: &str) -> usize {
        self.per_user.get(user).copied().unwrap_or(0)
    }

    /// Removes `user`'s token closest to expiry; false if it has none.
    fn evict_oldest_of(&mut self, user: &str) -> bool {
        if self.count(user) == 0 {
            return false;
        }
        let oldest = self
            .by_hash
            .iter()
            .filter(|(_, e)| e.user == user)
            .min_by_key(|(_, e)| e.expires)
            .map(|(k, _)| *k);
        match oldest {
            Some(key) => {
                self.remove(&key);
                true
            }
            None => false,
        }
    }

    fn forget_one(&mut self, user: &str) {
        if let Some(n) = self.per_user.get_mut(user) {
            *n -= 1;
            if *n == 0 {
                self.per_user.remove(user);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn entry(user: &str, expires: Instant) -> TokenEntry {
        TokenEntry {
            user: user.into(),
            credential: [0; 32],
            expires,
        }
    }

    fn key(i: usize) -> Digest {
        sha256(&i.to_le_bytes())
    }

    #[test]
    fn one_user_cannot_crowd_out_another() {
        let mut t = Tokens::default();
        let now = Instant::now();
        let later = now + Duration::from_secs(60);
        t.insert(key(0), entry("admin", later), now).unwrap();
        for i in 1..10_000 {
            t.insert(
                key(i),
                entry("reader", later + Duration::from_millis(i as u64)),
                now,
            )
            .unwrap();
        }
        assert_eq!(t.count("reader"), MAX_TOKENS_PER_USER);
        assert!(matches!(t.get(&key(0), now), Some(Ok(_))));
        // The reader's newest tokens are the ones kept.
        assert!(t.get(&key(1), now).is_none());
        assert!(matches!(t.get(&key(9_999), now), Some(Ok(_))));
    }

    #[test]
    fn expired_tokens_are_reported_and_removed() {
        let mut t = Tokens::default();
        let now = Instant::now();
        t.insert(key(1), entry("a", now + Duration::from_millis(1)), now)
            .unwrap();
        let later = now + Duration::from_secs(1);
        assert!(matches!(t.get(&key(1), later), Some(Err(()))));
        assert!(t.get(&key(1), later).is_none());
        assert_eq!(t.count("a"), 0);
    }
}
