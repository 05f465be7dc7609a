//! Signed tokens (`--token-secret FILE`): a token any hangar node that has
//! the same users file and the same secret can verify, with no table shared
//! between them (several stateless nodes behind one name; tokens also survive
//! a restart).
//!
//! A token is `hs1.<user>.<expiry>.<tag>`: the user name (URL-safe base64),
//! the expiry (Unix seconds) and an HMAC-SHA256 tag over both and the digest
//! of the user's password hash at issue time. So a removed user or a changed
//! password invalidates every token of that user on every node, as soon as
//! that node has re-read the users file (SIGHUP). The trade-off against the
//! in-memory tokens: a single token cannot be withdrawn before it expires
//! (only all of a user's, by changing the password, or all of everyone's, by
//! changing the secret), and expiry follows each node's wall clock.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use ring::hmac;

use super::header::base64_url;
use super::tokens::Digest;
use crate::error::{Error, Result};

const PREFIX: &str = "hs1.";

/// Shortest secret accepted: 256 bits, as many as the tag.
pub const MIN_SECRET_BYTES: usize = 32;

/// The key tokens are signed with.
pub struct Secret(hmac::Key);

impl Secret {
    /// The secret is the file's content (surrounding whitespace ignored), at
    /// least [`MIN_SECRET_BYTES`] long, e.g. from `head -c 48 /dev/urandom | base64`.
    pub fn read(path: &std::path::Path) -> Result<Secret> {
        let bytes = std::fs::read(path)
            .map_err(|e| Error::io(format!("reading --token-secret {}", path.display()), e))?;
        let trimmed = bytes.trim_ascii();
        if trimmed.len() < MIN_SECRET_BYTES {
            return Err(Error::InvalidArgument(format!(
                "--token-secret {} holds {} bytes; it needs at least {MIN_SECRET_BYTES} \
                 (e.g. head -c 48 /dev/urandom | base64 > {})",
                path.display(),
                trimmed.len(),
                path.display()
            )));
        }
        Ok(Secret::new(trimmed))
    }

    pub fn new(secret: &[u8]) -> Secret {
        Secret(hmac::Key::new(hmac::HMAC_SHA256, secret))
    }

    /// A token for `user` whose password hash has digest `credential`.
    pub fn issue(&self, user: &str, credential: &Digest, expires: SystemTime) -> String {
        let seconds = expires
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs();
        let body = format!("{PREFIX}{}.{seconds}", base64_url(user.as_bytes()));
        let tag = hmac::sign(&self.0, &signed_bytes(&body, credential));
        format!("{body}.{}", base64_url(tag.as_ref()))
    }

    /// Whether `token` is a signed token at all (else it is an in-memory one).
    pub fn is_signed(token: &str) -> bool {
        token.starts_with(PREFIX)
    }

    /// The user a signed token names, before its tag is checked (to find
    /// the credential it must be bound to).
    pub fn user_of(token: &str) -> Option<String> {
        let user = token.strip_prefix(PREFIX)?.split('.').next()?;
        let bytes = base64_url_decode(user)?;
        String::from_utf8(bytes).ok()
    }

    /// Checks the tag against `credential` (the user's current password-hash
    /// digest) and the expiry against `now`. `Err(true)` when it is only
    /// expired, `Err(false)` when it is not a valid token.
    pub fn verify(&self, token: &str, credential: &Digest, now: SystemTime) -> Result<(), bool> {
        let (body, tag) = token.rsplit_once('.').ok_or(false)?;
        let tag = base64_url_decode(tag).ok_or(false)?;
        hmac::verify(&self.0, &signed_bytes(body, credential), &tag).map_err(|_| false)?;
        let seconds: u64 = body
            .rsplit('.')
            .next()
            .and_then(|s| s.parse().ok())
            .ok_or(false)?;
        let expires = UNIX_EPOCH + Duration::from_secs(seconds);
        if expires <= now {
            return Err(true);
        }
        Ok(())
    }
}

fn signed_bytes(body: &str, credential: &Digest) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(body.len() + 1 + credential.len());
    bytes.extend_from_slice(body.as_bytes());
    bytes.push(0);
    bytes.extend_from_slice(credential);
    bytes
}

fn base64_url_decode(text: &str) -> Option<Vec<u8>> {
    use base64::Engine as _;
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(text)
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    const CREDENTIAL: Digest = [7; 32];

    fn secret() -> Secret {
        Secret::new(&[42; 32])
    }

    #[test]
    fn a_token_verifies_until_it_expires() {
        let now = SystemTime::now();
        let token = secret().issue("alice", &CREDENTIAL, now + Duration::from_secs(60));
        assert!(Secret::is_signed(&token));
        assert_eq!(Secret::user_of(&token).as_deref(), Some("alice"));
        assert_eq!(secret().verify(&token, &CREDENTIAL, now), Ok(()));
        assert_eq!(
            secret().verify(&token, &CREDENTIAL, now + Duration::from_secs(61)),
            Err(true)
        );
    }

    #[test]
    fn another_secret_another_password_or_any_altered_byte_is_refused() {
        let now = SystemTime::now();
        let token = secret().issue("alice", &CREDENTIAL, now + Duration::from_secs(60));
        assert_eq!(
            Secret::new(&[43; 32]).verify(&token, &CREDENTIAL, now),
            Err(false)
        );
        assert_eq!(secret().verify(&token, &[8; 32], now), Err(false));
        for i in 0..token.len() {
            let mut altered = token.clone().into_bytes();
            altered[i] = if altered[i] == b'A' { b'B' } else { b'A' };
            let altered = String::from_utf8(altered).unwrap();
            if altered != token {
                assert_eq!(
                    secret().verify(&altered, &CREDENTIAL, now),
                    Err(false),
                    "byte {i} altered: {altered}"
                );
            }
        }
        // A later expiry cannot be written in by hand.
        let (body, tag) = token.rsplit_once('.').unwrap();
        let (head, _) = body.rsplit_once('.').unwrap();
        let extended = format!("{head}.99999999999.{tag}");
        assert_eq!(secret().verify(&extended, &CREDENTIAL, now), Err(false));
    }

    #[test]
    fn short_secrets_are_refused_with_a_hint() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("secret");
        std::fs::write(&path, "too short\n").unwrap();
        let err = Secret::read(&path).err().unwrap().to_string();
        assert!(
            err.contains("at least 32") && err.contains("urandom"),
            "{err}"
        );
        std::fs::write(&path, format!("{}\n", "x".repeat(40))).unwrap();
        assert!(Secret::read(&path).is_ok());
    }
}
