//! Authentication and authorisation: users, roles, Basic/Bearer headers, tokens.
//!
//! The flow is the Arrow cookbook's: a client trades `authorization: Basic …`
//! for a bearer token in Handshake and carries `authorization: Bearer <token>`
//! on every later call. This module adds what the recipe leaves open: Argon2id
//! password hashes in a users file ([`users`]), roles, bounded token tables
//! bound to the credentials they were issued for ([`tokens`]), and throttling
//! of password guessing ([`throttle`]). It knows nothing of gRPC: the service
//! hands it header bytes and a peer address.

mod cert;
mod header;
pub mod signed;
mod throttle;
mod tokens;
mod users;

use std::fmt;
use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant, SystemTime};

use ring::rand::{SecureRandom, SystemRandom};

use crate::error::{Error, Result};

pub use cert::certificate_subject;
pub use header::{base64_decode, base64_encode, parse_authorization, Credentials};
pub use throttle::{PEER_FAILURES, USER_ADDRESSES, WINDOW as FAILURE_WINDOW};
pub use tokens::{MAX_TOKENS, MAX_TOKENS_PER_USER};
pub use users::{User, Users, MAX_PASSWORD_BYTES, MAX_USER_BYTES};

/// The recipe's error messages, word for word, so clients matching on them work.
pub const NO_CREDENTIALS: &str = "No credentials supplied";
pub const BAD_PASSWORD: &str = "Unknown user or invalid password";
pub const INVALID_TOKEN: &str = "Invalid token";
pub const TOKEN_EXPIRED: &str = "Token expired";

fn unauthenticated(message: impl Into<String>) -> Error {
    Error::Unauthenticated(message.into())
}

/// What a user may do. Each role includes the ones before it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Role {
    Read,
    Write,
    Admin,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Read => "read",
            Role::Write => "write",
            Role::Admin => "admin",
        }
    }

    /// Whether this role may perform `op`.
    pub fn allows(self, op: Operation) -> bool {
        self >= op.required_role()
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Role {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<Role, String> {
        match s {
            "read" => Ok(Role::Read),
            "write" => Ok(Role::Write),
            "admin" => Ok(Role::Admin),
            other => Err(format!(
                "unknown role '{other}' (expected read, write or admin)"
            )),
        }
    }
}

/// The operations roles are checked against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    ListFlights,
    GetFlightInfo,
    GetSchema,
    PollFlightInfo,
    DoGet,
    ListActions,
    DoExchange,
    DoAction,
    DoPut,
    DropDataset,
}

impl Operation {
    pub fn as_str(self) -> &'static str {
        match self {
            Operation::ListFlights => "ListFlights",
            Operation::GetFlightInfo => "GetFlightInfo",
            Operation::GetSchema => "GetSchema",
            Operation::PollFlightInfo => "PollFlightInfo",
            Operation::DoGet => "DoGet",
            Operation::ListActions => "ListActions",
            Operation::DoExchange => "DoExchange",
            Operation::DoAction => "DoAction",
            Operation::DoPut => "DoPut",
            Operation::DropDataset => "drop_dataset",
        }
    }

    fn required_role(self) -> Role {
        match self {
            Operation::DoPut => Role::Write,
            Operation::DropDataset => Role::Admin,
            _ => Role::Read,
        }
    }
}

/// Someone whose credentials checked out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    pub user: String,
    pub role: Role,
}

impl Principal {
    /// PermissionDenied naming the user, role and operation, unless allowed.
    pub fn check(&self, op: Operation) -> Result<()> {
        if self.role.allows(op) {
            Ok(())
        } else {
            Err(Error::PermissionDenied(format!(
                "user '{}' has role '{}', which may not {}; it needs role '{}'",
                self.user,
                self.role,
                op.as_str(),
                op.required_role()
            )))
        }
    }
}

/// Checks credentials and tokens against the current users file.
pub struct Authenticator {
    path: PathBuf,
    users: RwLock<Arc<Users>>,
    tokens: Mutex<tokens::Tokens>,
    throttle: Mutex<throttle::Throttle>,
    ttl: Duration,
    rng: SystemRandom,
    /// `--token-secret`: issue signed tokens any node can verify, instead
    /// of random ones this process remembers.
    secret: Option<signed::Secret>,
}

impl fmt::Debug for Authenticator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Authenticator")
            .field("path", &self.path)
            .field("ttl", &self.ttl)
            .finish_non_exhaustive()
    }
}

impl Authenticator {
    /// Loads the users file; `ttl` is the lifetime of issued tokens.
    pub fn open(path: &Path, ttl: Duration) -> Result<Authenticator> {
        let users = Users::load(path)?;
        Ok(Authenticator {
            path: path.to_path_buf(),
            users: RwLock::new(Arc::new(users)),
            tokens: Mutex::new(tokens::Tokens::default()),
            throttle: Mutex::new(throttle::Throttle::default()),
            ttl,
            rng: SystemRandom::new(),
            secret: None,
        })
    }

    /// Issues and accepts signed tokens (see [`signed`]).
    pub fn with_secret(mut self, secret: signed::Secret) -> Authenticator {
        self.secret = Some(secret);
        self
    }

    /// Re-reads the users file (on SIGHUP). Tokens of users who are gone or
    /// whose password changed stop working at once; a changed role applies to
    /// existing tokens too.
    pub fn reload(&self) -> Result<usize> {
        let users = Arc::new(Users::load(&self.path)?);
        let count = users.iter().count();
        *self.users.write().unwrap_or_else(|p| p.into_inner()) = users.clone();
        self.lock_tokens().retain(|e| {
            users
                .get(&e.user)
                .is_some_and(|u| credential(u) == e.credential)
        });
        Ok(count)
    }

    fn current_users(&self) -> Arc<Users> {
        self.users.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn lock_tokens(&self) -> std::sync::MutexGuard<'_, tokens::Tokens> {
        self.tokens.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Verifies a password (slow on purpose: call it from a blocking thread,
    /// through a bounded pool). Over-long names and passwords are refused
    /// before anything is hashed or remembered; guessing is throttled (see
    /// [`throttle`]).
    pub fn login(&self, user: &str, password: &str, peer: Option<IpAddr>) -> Result<Principal> {
        if user.len() > MAX_USER_BYTES || password.len() > MAX_PASSWORD_BYTES {
            return Err(unauthenticated(format!(
                "{BAD_PASSWORD}: user names are at most {MAX_USER_BYTES} bytes and passwords \
                 at most {MAX_PASSWORD_BYTES}"
            )));
        }
        let peer = peer.unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED));
        let throttle = || self.throttle.lock().unwrap_or_else(|p| p.into_inner());
        throttle()
            .begin(user, peer, Instant::now())
            .map_err(|wait| {
                Error::ResourceExhausted(format!("too many failed attempts, retry in {wait} s"))
            })?;
        let users = self.current_users();
        let found = users.get(user);
        // Hash even for unknown users, so timing does not tell which names exist.
        let hash = found.map(|u| u.hash.as_str()).unwrap_or(users::DUMMY_HASH);
        let ok = users::verify_password(hash, password) && found.is_some() && !password.is_empty();
        throttle().end(user, peer, ok, Instant::now());
        match found {
            Some(u) if ok => Ok(Principal {
                user: u.name.clone(),
                role: u.role,
            }),
            _ => Err(unauthenticated(BAD_PASSWORD)),
        }
    }

    /// Issues a new token for a principal who just proved its password:
    /// 256 random bits, URL-safe text, valid for the server's token lifetime.
    pub fn issue(&self, principal: &Principal) -> Result<String> {
        let users = self.current_users();
        let user = users
            .get(&principal.user)
            .ok_or_else(|| unauthenticated(BAD_PASSWORD))?;
        if let Some(secret) = &self.secret {
            let expires = SystemTime::now()
                .checked_add(self.ttl)
                .ok_or_else(|| Error::Internal("--token-ttl overflows the clock".into()))?;
            return Ok(secret.issue(&user.name, &credential(user), expires));
        }
        let mut raw = [0u8; 32];
        self.rng
            .fill(&mut raw)
            .map_err(|_| Error::Internal("the OS random generator failed".into()))?;
        let token = header::base64_url(&raw);
        let now = Instant::now();
        let expires = now
            .checked_add(self.ttl)
            .ok_or_else(|| Error::Internal("--token-ttl overflows the clock".into()))?;
        self.lock_tokens().insert(
            tokens::sha256(token.as_bytes()),
            tokens::TokenEntry {
                user: user.name.clone(),
                credential: credential(user),
                expires,
            },
            now,
        )?;
        Ok(token)
    }

    /// The principal a token belongs to, if it is valid, unexpired, and its
    /// user still exists with the password it was issued against.
    pub fn verify_token(&self, token: &str) -> Result<Principal> {
        if signed::Secret::is_signed(token) {
            return self.verify_signed(token);
        }
        let hash = tokens::sha256(token.as_bytes());
        let entry = match self.lock_tokens().get(&hash, Instant::now()) {
            Some(Ok(entry)) => entry,
            Some(Err(())) => return Err(unauthenticated(TOKEN_EXPIRED)),
            None => return Err(unauthenticated(INVALID_TOKEN)),
        };
        let users = self.current_users();
        match users.get(&entry.user) {
            Some(user) if credential(user) == entry.credential => Ok(Principal {
                user: user.name.clone(),
                role: user.role,
            }),
            _ => {
                self.lock_tokens().remove(&hash);
                Err(unauthenticated(INVALID_TOKEN))
            }
        }
    }

    /// A signed token: its tag must match the named user's current password
    /// hash under our secret. Without a secret no signed token is valid.
    fn verify_signed(&self, token: &str) -> Result<Principal> {
        let secret = self
            .secret
            .as_ref()
            .ok_or_else(|| unauthenticated(INVALID_TOKEN))?;
        let users = self.current_users();
        let user = signed::Secret::user_of(token)
            .and_then(|name| users.get(&name))
            .ok_or_else(|| unauthenticated(INVALID_TOKEN))?;
        match secret.verify(token, &credential(user), SystemTime::now()) {
            Ok(()) => Ok(Principal {
                user: user.name.clone(),
                role: user.role,
            }),
            Err(true) => Err(unauthenticated(TOKEN_EXPIRED)),
            Err(false) => Err(unauthenticated(INVALID_TOKEN)),
        }
    }

    /// Live tokens held for `user` (for tests and diagnostics).
    pub fn tokens_of(&self, user: &str) -> usize {
        self.lock_tokens().count(user)
    }
}

/// What a token is bound to: the digest of its user's password hash.
fn credential(user: &User) -> tokens::Digest {
    tokens::sha256(user.hash.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;
    use tonic::Code;

    #[test]
    fn roles_are_ordered() {
        let reader = Principal {
            user: "r".into(),
            role: Role::Read,
        };
        assert!(reader.check(Operation::DoGet).is_ok());
        let err = reader.check(Operation::DoPut).unwrap_err();
        assert_eq!(err.code(), Code::PermissionDenied);
        assert!(err.message().contains("'r'") && err.message().contains("read"));
        assert!(err.message().contains("DoPut"));
        let writer = Principal {
            user: "w".into(),
            role: Role::Write,
        };
        assert!(writer.check(Operation::DoPut).is_ok());
        assert!(writer.check(Operation::DropDataset).is_err());
        assert!(Role::Admin.allows(Operation::DropDataset));
    }

    fn authenticator(ttl: Duration) -> (tempfile::TempDir, Authenticator) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("users");
        let mut users = Users::default();
        users.add("test", Role::Write, "password").unwrap();
        users.add("other", Role::Read, "pw2").unwrap();
        users.save(&path).unwrap();
        let auth = Authenticator::open(&path, ttl).unwrap();
        (dir, auth)
    }

    #[test]
    fn login_issues_tokens_that_verify_expire_and_die_with_their_user() {
        let (dir, auth) = authenticator(Duration::from_secs(3600));
        let p = auth.login("test", "password", None).unwrap();
        assert_eq!(p.role, Role::Write);
        let token = auth.issue(&p).unwrap();
        assert!(token.len() >= 43, "256 bits of entropy");
        assert_eq!(auth.verify_token(&token).unwrap(), p);
        assert_eq!(
            auth.verify_token("garbage").unwrap_err().message(),
            INVALID_TOKEN
        );
        assert_eq!(
            auth.login("test", "wrong", None).unwrap_err().message(),
            BAD_PASSWORD
        );
        assert_eq!(
            auth.login("nobody", "password", None)
                .unwrap_err()
                .message(),
            BAD_PASSWORD
        );

        // Removing the user and reloading revokes the token.
        let path = dir.path().join("users");
        let mut users = Users::load(&path).unwrap();
        users.remove("test").unwrap();
        users.save(&path).unwrap();
        auth.reload().unwrap();
        assert_eq!(
            auth.verify_token(&token).unwrap_err().message(),
            INVALID_TOKEN
        );

        let (_dir, short) = authenticator(Duration::from_millis(1));
        let p = short.login("other", "pw2", None).unwrap();
        let token = short.issue(&p).unwrap();
        std::thread::sleep(Duration::from_millis(5));
        assert_eq!(
            short.verify_token(&token).unwrap_err().message(),
            TOKEN_EXPIRED
        );
    }

    #[test]
    fn a_changed_password_revokes_tokens_on_reload_and_keeps_the_role() {
        let (dir, auth) = authenticator(Duration::from_secs(3600));
        let p = auth.login("test", "password", None).unwrap();
        let token = auth.issue(&p).unwrap();
        let path = dir.path().join("users");
        let mut users = Users::load(&path).unwrap();
        users.remove("test").unwrap();
        users.add("test", Role::Write, "new password").unwrap();
        users.save(&path).unwrap();
        auth.reload().unwrap();
        assert_eq!(
            auth.verify_token(&token).unwrap_err().message(),
            INVALID_TOKEN
        );
        assert!(auth.login("test", "new password", None).is_ok());
    }

    #[test]
    fn repeated_failures_lock_out_the_peer_not_the_user_everywhere() {
        let (_dir, auth) = authenticator(Duration::from_secs(3600));
        let peer: IpAddr = "127.0.0.9".parse().unwrap();
        for _ in 0..PEER_FAILURES {
            assert_eq!(
                auth.login("test", "bad", Some(peer)).unwrap_err().code(),
                Code::Unauthenticated
            );
        }
        let err = auth.login("test", "password", Some(peer)).unwrap_err();
        assert_eq!(err.code(), Code::ResourceExhausted);
        assert!(
            err.message().contains("too many failed attempts, retry in"),
            "{err}"
        );
        // The same peer is locked out for other users too ...
        let err = auth.login("other", "pw2", Some(peer)).unwrap_err();
        assert_eq!(err.code(), Code::ResourceExhausted);
        // ... but the user can still log in from elsewhere.
        let elsewhere: IpAddr = "127.0.0.10".parse().unwrap();
        assert!(auth.login("test", "password", Some(elsewhere)).is_ok());
    }

    #[test]
    fn oversized_credentials_are_refused_before_any_work() {
        let (_dir, auth) = authenticator(Duration::from_secs(3600));
        let peer: IpAddr = "127.0.0.11".parse().unwrap();
        let huge = "u".repeat(1 << 20);
        for _ in 0..20 {
            let err = auth.login(&huge, "x", Some(peer)).unwrap_err();
            assert_eq!(err.code(), Code::Unauthenticated);
        }
        // Nothing was counted against the peer, nothing stored.
        assert!(auth.login("test", "password", Some(peer)).is_ok());
        let long_password = "p".repeat(MAX_PASSWORD_BYTES + 1);
        assert!(auth.login("test", &long_password, Some(peer)).is_err());
    }
}
