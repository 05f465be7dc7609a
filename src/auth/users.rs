//! The users file: one `name:role:<Argon2id PHC hash>` line per user, written
//! atomically with mode 0600, refused if anyone else could change it.

use std::fs;
use std::io::Write as _;
use std::path::{Path, PathBuf};

use argon2::password_hash::{PasswordHash, PasswordHasher, SaltString};
use argon2::Argon2;
use ring::rand::{SecureRandom, SystemRandom};

use super::Role;
use crate::error::{Error, Result};

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
    /// A users file that is a symbolic link, or that group or others may
    /// write, is refused: whoever can change it can grant themselves admin.
    pub fn load(path: &Path) -> Result<Users> {
        use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
        let reading = |e: std::io::Error| {
            if e.kind() == std::io::ErrorKind::NotFound {
                Error::NotFound(format!("users file {} does not exist", path.display()))
            } else if e.raw_os_error() == Some(libc::ELOOP) {
                Error::InvalidArgument(format!(
                    "users file {} is a symbolic link: give the real file's path",
                    path.display()
                ))
            } else {
                Error::io(format!("reading users file {}", path.display()), e)
            }
        };
        let mut file = fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW)
            .open(path)
            .map_err(reading)?;
        let meta = file.metadata().map_err(reading)?;
        if !meta.is_file() {
            return Err(Error::InvalidArgument(format!(
                "users file {} is not a regular file",
                path.display()
            )));
        }
        if meta.mode() & 0o022 != 0 {
            return Err(Error::InvalidArgument(format!(
                "users file {} is writable by group or others (mode {:o}): run 'chmod 600 {}'",
                path.display(),
                meta.mode() & 0o777,
                path.display()
            )));
        }
        let mut text = String::new();
        std::io::Read::read_to_string(&mut file, &mut text).map_err(reading)?;
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
        check_password(password)?;
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

    /// Replaces a user's password (fresh salt), keeping the role.
    pub fn set_password(&mut self, name: &str, password: &str) -> Result<()> {
        check_password(password)?;
        let hash = hash_password(password)?;
        let user = self
            .users
            .iter_mut()
            .find(|u| u.name == name)
            .ok_or_else(|| Error::NotFound(format!("user '{name}' does not exist")))?;
        user.hash = hash;
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

    /// Writes the file atomically (temporary file, fsync, rename) with mode
    /// 0600. The temporary file has an unpredictable name, is created
    /// exclusively (never an existing file, never through a symbolic link)
    /// and is 0600 from its first byte, so nobody can pre-create, redirect or
    /// read it.
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
        if fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_symlink()) {
            return Err(Error::InvalidArgument(format!(
                "users file {} is a symbolic link: give the real file's path",
                path.display()
            )));
        }
        let mut nonce = [0u8; 12];
        SystemRandom::new()
            .fill(&mut nonce)
            .map_err(|_| Error::Internal("the OS random generator failed".into()))?;
        let temp = dir.join(format!(
            ".{}.tmp-{}",
            file_name.to_string_lossy(),
            super::header::base64_url(&nonce)
        ));
        let write = || -> std::io::Result<()> {
            let mut f = fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .custom_flags(libc::O_NOFOLLOW)
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

pub(super) fn validate_user_name(name: &str) -> Result<()> {
    if name.is_empty() || name.len() > MAX_USER_BYTES {
        return Err(Error::InvalidArgument(format!(
            "a user name must be 1 to {MAX_USER_BYTES} bytes"
        )));
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

/// Longest user name and password accepted anywhere (login or users file):
/// larger ones are refused before anything is hashed or remembered.
pub const MAX_USER_BYTES: usize = 128;
pub const MAX_PASSWORD_BYTES: usize = 1024;

fn check_password(password: &str) -> Result<()> {
    if password.is_empty() || password.len() > MAX_PASSWORD_BYTES {
        return Err(Error::InvalidArgument(format!(
            "a password must be 1 to {MAX_PASSWORD_BYTES} bytes"
        )));
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

pub(super) fn verify_password(hash: &str, password: &str) -> bool {
    use argon2::{Algorithm, Params, Version};
    let Ok(parsed) = PasswordHash::new(hash) else {
        return false;
    };
    let (Ok(algorithm), Ok(params)) = (
        Algorithm::try_from(parsed.algorithm),
        Params::try_from(&parsed),
    ) else {
        return false;
    };
    let version = parsed
        .version
        .and_then(|v| Version::try_from(v).ok())
        .unwrap_or_default();
    let (Some(salt), Some(expected)) = (parsed.salt, parsed.hash) else {
        return false;
    };
    let mut salt_bytes = [0u8; 64];
    let Ok(salt) = salt.decode_b64(&mut salt_bytes) else {
        return false;
    };
    // A hash file with absurd parameters must not make a login allocate
    // without bound: hangar's own hashes use the crate defaults (19 MiB).
    if params.block_count() > MAX_ARGON2_BLOCKS {
        return false;
    }
    let mut out = vec![0u8; expected.len()];
    let mut blocks = take_blocks(params.block_count());
    let computed = Argon2::new(algorithm, version, params).hash_password_into_with_memory(
        password.as_bytes(),
        salt,
        &mut out,
        &mut blocks[..],
    );
    give_back_blocks(blocks);
    // No early exit: timing must not tell how much of a guess's hash matched.
    let expected = expected.as_bytes();
    let diff = out
        .iter()
        .zip(expected)
        .fold(0u8, |acc, (a, b)| acc | (a ^ b));
    computed.is_ok() && out.len() == expected.len() && std::hint::black_box(diff) == 0
}

/// Largest Argon2 memory a stored hash may ask for (64 MiB).
const MAX_ARGON2_BLOCKS: usize = 64 * 1024;

/// Argon2's working memory, kept between checks. Allocating ~19 MiB per
/// check on whichever blocking thread runs it leaves glibc holding that much
/// per thread arena afterwards: 100 logins raised RSS by hundreds of MiB.
/// Reusing a few buffers keeps it at (concurrent checks) x 19 MiB, for good.
static BLOCKS: std::sync::Mutex<Vec<Vec<argon2::Block>>> = std::sync::Mutex::new(Vec::new());

fn take_blocks(count: usize) -> Vec<argon2::Block> {
    let mut pool = BLOCKS.lock().unwrap_or_else(|p| p.into_inner());
    match pool.iter().position(|b| b.len() >= count) {
        Some(i) => {
            let mut blocks = pool.swap_remove(i);
            blocks.truncate(count);
            blocks
        }
        None => vec![argon2::Block::default(); count],
    }
}

fn give_back_blocks(blocks: Vec<argon2::Block>) {
    let mut pool = BLOCKS.lock().unwrap_or_else(|p| p.into_inner());
    // The service runs at most a few checks at once; keep that many.
    if pool.len() < 4 {
        pool.push(blocks);
    }
}

/// A valid Argon2id hash of a random password, checked against when the user
/// does not exist so both paths cost the same.
pub(super) const DUMMY_HASH: &str =
    "$argon2id$v=19$m=19456,t=2,p=1$c29tZXNhbHRzb21lc2FsdA$9N3Qm0F0ZbYfBp4tP5bBq8Wc1yX6H0lZ7n0Qk0bX2rE";

#[cfg(test)]
mod tests {
    use super::*;
    use tonic::Code;

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

    #[test]
    fn a_planted_temporary_file_or_link_cannot_capture_the_hashes() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("users");
        // The old predictable names, pre-created by an attacker.
        let planted = dir
            .path()
            .join(format!(".users.tmp-{}", std::process::id()));
        fs::write(&planted, "attacker").unwrap();
        fs::set_permissions(&planted, fs::Permissions::from_mode(0o644)).unwrap();
        let mut users = Users::default();
        users.add("a", Role::Read, "pw").unwrap();
        users.save(&path).unwrap();
        assert_eq!(fs::read_to_string(&planted).unwrap(), "attacker");
        let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        // A users file that is a link is refused, for reading and writing.
        let target = dir.path().join("elsewhere");
        fs::write(&target, "").unwrap();
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        assert!(Users::load(&link)
            .unwrap_err()
            .message()
            .contains("symbolic link"));
        assert!(users
            .save(&link)
            .unwrap_err()
            .message()
            .contains("symbolic link"));
        assert_eq!(fs::read_to_string(&target).unwrap(), "");
    }

    #[test]
    fn a_users_file_others_can_write_is_refused() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("users");
        let mut users = Users::default();
        users.add("a", Role::Read, "pw").unwrap();
        users.save(&path).unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o666)).unwrap();
        let err = Users::load(&path).unwrap_err();
        assert!(err.message().contains("chmod 600"), "{err}");
    }

    #[test]
    fn passwords_change_and_keep_the_role() {
        let mut users = Users::default();
        users.add("carol", Role::Write, "old").unwrap();
        let before = users.get("carol").unwrap().hash.clone();
        users.set_password("carol", "new").unwrap();
        let carol = users.get("carol").unwrap();
        assert_eq!(carol.role, Role::Write);
        assert_ne!(carol.hash, before);
        assert!(verify_password(&carol.hash, "new"));
        assert!(!verify_password(&carol.hash, "old"));
        assert_eq!(
            users.set_password("nobody", "x").unwrap_err().code(),
            Code::NotFound
        );
        assert!(users.set_password("carol", &"x".repeat(2000)).is_err());
    }

    #[test]
    fn dummy_hash_is_a_real_argon2_hash() {
        assert!(PasswordHash::new(DUMMY_HASH).is_ok());
        assert!(!verify_password(DUMMY_HASH, "password"));
    }
}
