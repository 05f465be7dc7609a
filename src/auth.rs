//! Authentication and authorisation: users, roles, Basic/Bearer headers, tokens.
//!
//! The flow is the Arrow cookbook's: a client trades `authorization: Basic …`
//! for a bearer token in Handshake and carries `authorization: Bearer <token>` on
//! every later call. This module adds what the recipe leaves open: Argon2id
//! password hashes in a users file, roles, token lifetime, a bounded token table
//! that keeps only token hashes, and throttling of password guessing. It knows
//! nothing of gRPC: the service hands it header bytes and a peer address.

use std::collections::HashMap;
use std::fmt;
use std::fs;
use std::io::Write as _;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use ring::rand::{SecureRandom, SystemRandom};

use crate::error::{Error, Result};

/// The recipe's error messages, word for word, so clients matching on them work.
pub const NO_CREDENTIALS: &str = "No credentials supplied";
pub const BAD_PASSWORD: &str = "Unknown user or invalid password";
pub const INVALID_TOKEN: &str = "Invalid token";
pub const TOKEN_EXPIRED: &str = "Token expired";

/// Longest `authorization` header value accepted; real ones are far shorter.
const MAX_HEADER_BYTES: usize = 4096;
/// Failed password checks allowed per user and per peer address in one window.
const MAX_FAILURES: u32 = 5;
const FAILURE_WINDOW: Duration = Duration::from_secs(60);
/// Bounds on the in-memory tables, so neither tokens nor guessers grow memory.
const MAX_TOKENS: usize = 65_536;
const MAX_THROTTLE_ENTRIES: usize = 16_384;

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

// ---------------------------------------------------------------------------
// Headers

/// Credentials parsed from an `authorization` header.
#[derive(Clone, PartialEq, Eq)]
pub enum Credentials {
    Basic { user: String, password: String },
    Bearer(String),
}

// Never print secrets, even in debug output.
impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Credentials::Basic { user, .. } => write!(f, "Basic({user:?}, <password>)"),
            Credentials::Bearer(_) => f.write_str("Bearer(<token>)"),
        }
    }
}

/// Parses an `authorization` header value: `Basic base64(user:password)` or
/// `Bearer <token>`, the scheme word in any case. Errors are Unauthenticated
/// and never echo the value.
pub fn parse_authorization(value: &[u8]) -> Result<Credentials> {
    if value.len() > MAX_HEADER_BYTES {
        return Err(unauthenticated(format!(
            "authorization header is too long (over {MAX_HEADER_BYTES} bytes)"
        )));
    }
    let value = std::str::from_utf8(value)
        .map_err(|_| unauthenticated("authorization header is not valid UTF-8"))?
        .trim();
    let (scheme, rest) = value.split_once(' ').unwrap_or((value, ""));
    let rest = rest.trim();
    if scheme.eq_ignore_ascii_case("basic") {
        let decoded = base64_decode(rest).ok_or_else(|| {
            unauthenticated("authorization header: Basic credentials are not valid base64")
        })?;
        let decoded = String::from_utf8(decoded).map_err(|_| {
            unauthenticated("authorization header: Basic credentials are not valid UTF-8")
        })?;
        let (user, password) = decoded.split_once(':').ok_or_else(|| {
            unauthenticated("authorization header: Basic credentials must be 'user:password'")
        })?;
        Ok(Credentials::Basic {
            user: user.to_string(),
            password: password.to_string(),
        })
    } else if scheme.eq_ignore_ascii_case("bearer") {
        if rest.is_empty() {
            return Err(unauthenticated(INVALID_TOKEN));
        }
        Ok(Credentials::Bearer(rest.to_string()))
    } else if value.is_empty() {
        Err(unauthenticated(NO_CREDENTIALS))
    } else {
        Err(unauthenticated(
            "authorization header: unsupported scheme (use Basic or Bearer)",
        ))
    }
}

fn unauthenticated(message: impl Into<String>) -> Error {
    Error::Unauthenticated(message.into())
}

const B64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/// Standard base64 with padding.
pub fn base64_encode(input: &[u8]) -> String {
    let mut out = String::with_capacity(input.len().div_ceil(3) * 4);
    for chunk in input.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(B64[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Decodes standard or URL-safe base64, padded or not. `None` if malformed.
pub fn base64_decode(input: &str) -> Option<Vec<u8>> {
    let input = input.trim_end_matches('=');
    let mut out = Vec::with_capacity(input.len() * 3 / 4);
    let mut acc = 0u32;
    let mut bits = 0;
    for c in input.bytes() {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' | b'-' => 62,
            b'/' | b'_' => 63,
            _ => return None,
        };
        acc = (acc << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    // A single leftover symbol (6 bits) cannot come from whole bytes.
    if bits >= 6 {
        return None;
    }
    Some(out)
}

/// URL-safe base64 without padding (for tokens).
fn base64_url(input: &[u8]) -> String {
    base64_encode(input)
        .trim_end_matches('=')
        .replace('+', "-")
        .replace('/', "_")
}

// ---------------------------------------------------------------------------
// Users file

/// One line of the users file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    pub name: String,
    pub role: Role,
    /// Argon2id PHC string.
    pub hash: String,
}

/// The users file: `name:role:<PHC hash>` per line; `#` comments allowed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Users {
    users: Vec<User>,
}

impl Users {
    /// Reads and checks a users file. Errors name the file and line.
    pub fn load(path: &Path) -> Result<Users> {
        let text = fs::read_to_string(path).map_err(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                Error::NotFound(format!("users file {} does not exist", path.display()))
            } else {
                Error::io(format!("reading users file {}", path.display()), e)
            }
        })?;
        Users::parse(&text).map_err(|e| {
            Error::InvalidArgument(format!("users file {}: {}", path.display(), e.message()))
        })
    }

    pub fn parse(text: &str) -> Result<Users> {
        let mut users = Users::default();
        for (i, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let bad = |why: &str| Error::InvalidArgument(format!("line {}: {why}", i + 1));
            let mut parts = line.splitn(3, ':');
            let (Some(name), Some(role), Some(hash)) = (parts.next(), parts.next(), parts.next())
            else {
                return Err(bad("expected 'name:role:hash'"));
            };
            validate_user_name(name).map_err(|e| bad(e.message()))?;
            let role: Role = role.parse().map_err(|e: String| bad(&e))?;
            if PasswordHash::new(hash).is_err() {
                return Err(bad("the password hash is not a PHC string"));
            }
            if users.get(name).is_some() {
                return Err(bad(&format!("user '{name}' appears twice")));
            }
            users.users.push(User {
                name: name.to_string(),
                role,
                hash: hash.to_string(),
            });
        }
        Ok(users)
    }

    pub fn get(&self, name: &str) -> Option<&User> {
        self.users.iter().find(|u| u.name == name)
    }

    pub fn iter(&self) -> impl Iterator<Item = &User> {
        self.users.iter()
    }

    /// Adds a user with a fresh Argon2id hash of `password`.
    pub fn add(&mut self, name: &str, role: Role, password: &str) -> Result<()> {
        validate_user_name(name)?;
        if password.is_empty() {
            return Err(Error::InvalidArgument(
                "the password must not be empty".into(),
            ));
        }
        if self.get(name).is_some() {
            return Err(Error::AlreadyExists(format!(
                "user '{name}' already exists"
            )));
        }
        let hash = hash_password(password)?;
        self.users.push(User {
            name: name.to_string(),
            role,
            hash,
        });
        Ok(())
    }

    pub fn remove(&mut self, name: &str) -> Result<()> {
        let before = self.users.len();
        self.users.retain(|u| u.name != name);
        if self.users.len() == before {
            return Err(Error::NotFound(format!("user '{name}' does not exist")));
        }
        Ok(())
    }

    /// Writes the file atomically (temporary file, fsync, rename) with mode 0600.
    pub fn save(&self, path: &Path) -> Result<()> {
        use std::os::unix::fs::OpenOptionsExt;
        let mut text = String::new();
        for u in &self.users {
            text.push_str(&format!("{}:{}:{}\n", u.name, u.role, u.hash));
        }
        let dir = match path.parent() {
            Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
            _ => PathBuf::from("."),
        };
        let file_name = path.file_name().ok_or_else(|| {
            Error::InvalidArgument(format!("{} is not a file path", path.display()))
        })?;
        let temp = dir.join(format!(
            ".{}.tmp-{}",
            file_name.to_string_lossy(),
            std::process::id()
        ));
        let write = || -> std::io::Result<()> {
            let mut f = fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(&temp)?;
            f.write_all(text.as_bytes())?;
            f.sync_all()?;
            fs::rename(&temp, path)?;
            fs::File::open(&dir)?.sync_all()
        };
        write().map_err(|e| {
            let _ = fs::remove_file(&temp);
            Error::io(format!("writing users file {}", path.display()), e)
        })
    }
}

fn validate_user_name(name: &str) -> Result<()> {
    if name.is_empty() || name.len() > 128 {
        return Err(Error::InvalidArgument(
            "a user name must be 1 to 128 bytes".into(),
        ));
    }
    if name
        .chars()
        .any(|c| c == ':' || c.is_whitespace() || c.is_control())
    {
        return Err(Error::InvalidArgument(
            "a user name must not contain ':', spaces or control characters".into(),
        ));
    }
    Ok(())
}

fn hash_password(password: &str) -> Result<String> {
    let mut salt = [0u8; 16];
    SystemRandom::new()
        .fill(&mut salt)
        .map_err(|_| Error::Internal("the OS random generator failed".into()))?;
    let salt = SaltString::encode_b64(&salt)
        .map_err(|e| Error::Internal(format!("encoding a salt: {e}")))?;
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| Error::Internal(format!("hashing a password: {e}")))
}

fn verify_password(hash: &str, password: &str) -> bool {
    match PasswordHash::new(hash) {
        Ok(parsed) => Argon2::default()
            .verify_password(password.as_bytes(), &parsed)
            .is_ok(),
        Err(_) => false,
    }
}

// ---------------------------------------------------------------------------
// Tokens and throttling

struct TokenEntry {
    user: String,
    expires: Instant,
}

/// Issued tokens, keyed by their SHA-256: the server never stores a token.
#[derive(Default)]
struct Tokens {
    by_hash: HashMap<[u8; 32], TokenEntry>,
}

impl Tokens {
    fn insert(&mut self, hash: [u8; 32], entry: TokenEntry, now: Instant) {
        if self.by_hash.len() >= MAX_TOKENS {
            self.by_hash.retain(|_, e| e.expires > now);
        }
        if self.by_hash.len() >= MAX_TOKENS {
            // Still full of live tokens: the one closest to expiry goes.
            if let Some(oldest) = self
                .by_hash
                .iter()
                .min_by_key(|(_, e)| e.expires)
                .map(|(k, _)| *k)
            {
                self.by_hash.remove(&oldest);
            }
        }
        self.by_hash.insert(hash, entry);
    }
}

/// Compares without an early exit, so timing does not reveal how much matched.
fn constant_time_eq(a: &[u8; 32], b: &[u8; 32]) -> bool {
    let diff = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    std::hint::black_box(diff) == 0
}

fn sha256(data: &[u8]) -> [u8; 32] {
    let digest = ring::digest::digest(&ring::digest::SHA256, data);
    let mut out = [0u8; 32];
    out.copy_from_slice(digest.as_ref());
    out
}

/// Failed password attempts per key ("user:NAME" or "peer:IP") in a window.
#[derive(Default)]
struct Throttle {
    failures: HashMap<String, (Instant, u32)>,
}

impl Throttle {
    /// Seconds left before `key` may try again, if it is locked out.
    fn locked(&self, key: &str, now: Instant) -> Option<u64> {
        let (start, count) = self.failures.get(key)?;
        let elapsed = now.saturating_duration_since(*start);
        if *count >= MAX_FAILURES && elapsed < FAILURE_WINDOW {
            Some((FAILURE_WINDOW - elapsed).as_secs().max(1))
        } else {
            None
        }
    }

    fn fail(&mut self, key: String, now: Instant) {
        if self.failures.len() >= MAX_THROTTLE_ENTRIES {
            self.failures
                .retain(|_, (start, _)| now.saturating_duration_since(*start) < FAILURE_WINDOW);
            if self.failures.len() >= MAX_THROTTLE_ENTRIES {
                if let Some(oldest) = self
                    .failures
                    .iter()
                    .min_by_key(|(_, (start, _))| *start)
                    .map(|(k, _)| k.clone())
                {
                    self.failures.remove(&oldest);
                }
            }
        }
        let entry = self.failures.entry(key).or_insert((now, 0));
        if now.saturating_duration_since(entry.0) >= FAILURE_WINDOW {
            *entry = (now, 0);
        }
        entry.1 += 1;
    }

    fn succeed(&mut self, key: &str) {
        self.failures.remove(key);
    }
}

/// Checks credentials and tokens against the current users file.
pub struct Authenticator {
    path: PathBuf,
    users: RwLock<Arc<Users>>,
    tokens: Mutex<Tokens>,
    throttle: Mutex<Throttle>,
    ttl: Duration,
    rng: SystemRandom,
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
            tokens: Mutex::new(Tokens::default()),
            throttle: Mutex::new(Throttle::default()),
            ttl,
            rng: SystemRandom::new(),
        })
    }

    /// Re-reads the users file (on SIGHUP). Tokens of users who are gone stop
    /// working at once; a changed role applies to existing tokens too.
    pub fn reload(&self) -> Result<usize> {
        let users = Users::load(&self.path)?;
        let count = users.users.len();
        *self.users.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(users);
        let users = self.current_users();
        self.tokens
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .by_hash
            .retain(|_, e| users.get(&e.user).is_some());
        Ok(count)
    }

    fn current_users(&self) -> Arc<Users> {
        self.users.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Verifies a password (slow on purpose: call it from a blocking thread).
    /// Too many failures for the user or the peer lock both out for a while.
    pub fn login(&self, user: &str, password: &str, peer: Option<IpAddr>) -> Result<Principal> {
        let now = Instant::now();
        let keys = [
            Some(format!("user:{user}")),
            peer.map(|p| format!("peer:{p}")),
        ];
        {
            let throttle = self.throttle.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(wait) = keys
                .iter()
                .flatten()
                .filter_map(|k| throttle.locked(k, now))
                .max()
            {
                return Err(Error::ResourceExhausted(format!(
                    "too many failed attempts, retry in {wait} s"
                )));
            }
        }
        let users = self.current_users();
        let found = users.get(user);
        // Hash even for unknown users, so timing does not tell which names exist.
        let hash = found.map(|u| u.hash.as_str()).unwrap_or(DUMMY_HASH);
        let ok = verify_password(hash, password) && found.is_some() && !password.is_empty();
        let mut throttle = self.throttle.lock().unwrap_or_else(|p| p.into_inner());
        match (ok, found) {
            (true, Some(u)) => {
                for key in keys.iter().flatten() {
                    throttle.succeed(key);
                }
                Ok(Principal {
                    user: u.name.clone(),
                    role: u.role,
                })
            }
            _ => {
                for key in keys.into_iter().flatten() {
                    throttle.fail(key, now);
                }
                Err(unauthenticated(BAD_PASSWORD))
            }
        }
    }

    /// Issues a new token for a principal: 256 random bits, URL-safe text.
    pub fn issue(&self, principal: &Principal) -> Result<String> {
        let mut raw = [0u8; 32];
        self.rng
            .fill(&mut raw)
            .map_err(|_| Error::Internal("the OS random generator failed".into()))?;
        let token = base64_url(&raw);
        let now = Instant::now();
        self.tokens
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(
                sha256(token.as_bytes()),
                TokenEntry {
                    user: principal.user.clone(),
                    expires: now + self.ttl,
                },
                now,
            );
        Ok(token)
    }

    /// The principal a token belongs to, if it is valid, unexpired, and its
    /// user still exists.
    pub fn verify_token(&self, token: &str) -> Result<Principal> {
        let hash = sha256(token.as_bytes());
        let now = Instant::now();
        let mut tokens = self.tokens.lock().unwrap_or_else(|p| p.into_inner());
        let user = match tokens.by_hash.get_key_value(&hash) {
            // The map found it by hash; the constant-time comparison makes sure
            // no early-exit comparison of secret-derived bytes happens anywhere.
            Some((stored, entry)) if constant_time_eq(stored, &hash) => {
                if entry.expires <= now {
                    tokens.by_hash.remove(&hash);
                    return Err(unauthenticated(TOKEN_EXPIRED));
                }
                entry.user.clone()
            }
            _ => return Err(unauthenticated(INVALID_TOKEN)),
        };
        drop(tokens);
        let users = self.current_users();
        let user = users
            .get(&user)
            .ok_or_else(|| unauthenticated(INVALID_TOKEN))?;
        Ok(Principal {
            user: user.name.clone(),
            role: user.role,
        })
    }
}

/// The subject of a DER X.509 certificate, for logs: its common name (CN) if
/// it has one, else `None`. A small walk of the DER structure, tolerant of
/// anything unexpected (it returns `None` rather than failing).
pub fn certificate_subject(der: &[u8]) -> Option<String> {
    // Certificate ::= SEQUENCE { tbsCertificate SEQUENCE { [0] version?,
    //   serialNumber, signature, issuer, validity, subject, ... }, ... }
    let (_, cert, _) = der_read(der)?;
    let (_, mut tbs, _) = der_read(cert)?;
    let mut fields = Vec::new();
    while !tbs.is_empty() && fields.len() < 7 {
        let (tag, value, rest) = der_read(tbs)?;
        fields.push((tag, value));
        tbs = rest;
    }
    let skip = usize::from(fields.first()?.0 == 0xa0);
    let (_, subject) = *fields.get(skip + 4)?;
    // Name ::= SEQUENCE OF SET OF SEQUENCE { type OID, value ANY }
    let mut names = subject;
    while !names.is_empty() {
        let (_, set, rest) = der_read(names)?;
        names = rest;
        let (_, attribute, _) = der_read(set)?;
        let (oid_tag, oid, value) = der_read(attribute)?;
        if oid_tag == 0x06 && oid == [0x55, 0x04, 0x03] {
            let (_, cn, _) = der_read(value)?;
            return String::from_utf8(cn.to_vec()).ok();
        }
    }
    None
}

/// Reads one DER TLV: (tag, contents, rest).
fn der_read(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = input.split_first()?;
    let (&first, mut rest) = rest.split_first()?;
    let len = if first < 0x80 {
        usize::from(first)
    } else {
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 4 || rest.len() < n {
            return None;
        }
        let len = rest[..n]
            .iter()
            .fold(0usize, |acc, &b| (acc << 8) | usize::from(b));
        rest = &rest[n..];
        len
    };
    if rest.len() < len {
        return None;
    }
    Some((tag, &rest[..len], &rest[len..]))
}

/// A valid Argon2id hash of a random password, checked against when the user
/// does not exist so both paths cost the same.
const DUMMY_HASH: &str =
    "$argon2id$v=19$m=19456,t=2,p=1$c29tZXNhbHRzb21lc2FsdA$9N3Qm0F0ZbYfBp4tP5bBq8Wc1yX6H0lZ7n0Qk0bX2rE";

/// Parses a duration like `12h`, `30m`, `45s`, `1500ms`, `2d` or plain seconds.
pub fn parse_duration(text: &str) -> std::result::Result<Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let n: u64 = number
        .parse()
        .map_err(|_| format!("'{text}' is not a duration (e.g. 12h, 30m, 45s)"))?;
    let secs = match unit {
        "" | "s" => n,
        "ms" => return Ok(Duration::from_millis(n)),
        "m" => n * 60,
        "h" => n * 3600,
        "d" => n * 86_400,
        _ => {
            return Err(format!(
                "'{text}': unknown unit '{unit}' (use ms, s, m, h or d)"
            ))
        }
    };
    Ok(Duration::from_secs(secs))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tonic::Code;

    #[test]
    fn base64_roundtrips_and_rejects_garbage() {
        for input in [
            &b""[..],
            b"f",
            b"fo",
            b"foo",
            b"foob",
            b"fooba",
            b"foobar",
            &[0xff, 0, 1],
        ] {
            let encoded = base64_encode(input);
            assert_eq!(base64_decode(&encoded).unwrap(), input, "{encoded}");
        }
        assert_eq!(base64_encode(b"test:password"), "dGVzdDpwYXNzd29yZA==");
        assert_eq!(base64_decode("Zm9v").unwrap(), b"foo");
        assert!(base64_decode("Zm9v!").is_none());
        assert!(base64_decode("Z").is_none());
        assert_eq!(base64_url(&[0xfb, 0xff]), "-_8");
    }

    #[test]
    fn authorization_headers_parse_any_scheme_case() {
        let basic = parse_authorization(b"Basic dGVzdDpwYXNzd29yZA==").unwrap();
        assert_eq!(
            basic,
            Credentials::Basic {
                user: "test".into(),
                password: "password".into()
            }
        );
        assert_eq!(
            parse_authorization(b"bAsIc dGVzdDpwYXNzd29yZA==").unwrap(),
            basic
        );
        assert_eq!(
            parse_authorization(b"bearer abc").unwrap(),
            Credentials::Bearer("abc".into())
        );
        // The password may contain ':'.
        let colon = format!("Basic {}", base64_encode(b"u:p:q"));
        assert_eq!(
            parse_authorization(colon.as_bytes()).unwrap(),
            Credentials::Basic {
                user: "u".into(),
                password: "p:q".into()
            }
        );
    }

    #[test]
    fn malformed_headers_are_unauthenticated_without_echoing_secrets() {
        let cases: Vec<(Vec<u8>, &str)> = vec![
            (b"Basic !!!notbase64".to_vec(), "base64"),
            (
                format!("Basic {}", base64_encode(b"nocolon")).into_bytes(),
                "user:password",
            ),
            (
                format!("Basic {}", base64_encode(&[0xff, b':', 0xfe])).into_bytes(),
                "UTF-8",
            ),
            (vec![0xff, 0xfe], "UTF-8"),
            (vec![b'a'; 5000], "too long"),
            (b"Digest abc".to_vec(), "scheme"),
            (b"Bearer ".to_vec(), INVALID_TOKEN),
            (b"".to_vec(), NO_CREDENTIALS),
        ];
        for (value, expected) in cases {
            let err = parse_authorization(&value).unwrap_err();
            assert_eq!(err.code(), Code::Unauthenticated);
            assert!(err.message().contains(expected), "{err}");
            assert!(!err.message().contains("notbase64"));
        }
    }

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

    #[test]
    fn users_file_parses_and_reports_line_numbers() {
        let mut users = Users::default();
        users.add("alice", Role::Admin, "secret").unwrap();
        assert_eq!(
            users.add("alice", Role::Read, "x").unwrap_err().code(),
            Code::AlreadyExists
        );
        let text = format!(
            "# comment\n{}:admin:{}\n",
            "alice",
            users.get("alice").unwrap().hash
        );
        assert_eq!(Users::parse(&text).unwrap(), users);
        let err = Users::parse("# c\n\nbob:reader:$argon2id$x\n").unwrap_err();
        assert!(err.message().contains("line 3"), "{err}");
        let err = Users::parse("bob\n").unwrap_err();
        assert!(err.message().contains("line 1"), "{err}");
        let err = Users::parse("bob:read:nothash\n").unwrap_err();
        assert!(err.message().contains("PHC"), "{err}");
    }

    #[test]
    fn users_file_is_written_with_mode_0600() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("users");
        let mut users = Users::default();
        users.add("a", Role::Read, "pw").unwrap();
        users.save(&path).unwrap();
        let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert_eq!(Users::load(&path).unwrap(), users);
        let missing = Users::load(&dir.path().join("nope")).unwrap_err();
        assert_eq!(missing.code(), Code::NotFound);
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
    fn repeated_failures_lock_out_user_and_peer() {
        let (_dir, auth) = authenticator(Duration::from_secs(3600));
        let peer: IpAddr = "127.0.0.9".parse().unwrap();
        for _ in 0..MAX_FAILURES {
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
        // The same peer is locked out for other users too.
        let err = auth.login("other", "pw2", Some(peer)).unwrap_err();
        assert_eq!(err.code(), Code::ResourceExhausted);
    }

    #[test]
    fn throttle_memory_is_bounded() {
        let mut t = Throttle::default();
        let now = Instant::now();
        for i in 0..(MAX_THROTTLE_ENTRIES + 100) {
            t.fail(format!("peer:{i}"), now);
        }
        assert!(t.failures.len() <= MAX_THROTTLE_ENTRIES);
    }

    #[test]
    fn dummy_hash_is_a_real_argon2_hash() {
        assert!(PasswordHash::new(DUMMY_HASH).is_ok());
        assert!(!verify_password(DUMMY_HASH, "password"));
    }

    #[test]
    fn certificate_subject_never_panics_on_garbage() {
        for input in [
            &b""[..],
            b"\x30",
            b"\x30\x82\xff\xff",
            b"\x30\x03\x30\x01\x00",
        ] {
            assert_eq!(certificate_subject(input), None);
        }
    }

    #[test]
    fn durations_parse() {
        assert_eq!(parse_duration("12h").unwrap(), Duration::from_secs(43_200));
        assert_eq!(parse_duration("30m").unwrap(), Duration::from_secs(1800));
        assert_eq!(parse_duration("2").unwrap(), Duration::from_secs(2));
        assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
        assert!(parse_duration("soon").is_err());
        assert!(parse_duration("5y").is_err());
    }
}
