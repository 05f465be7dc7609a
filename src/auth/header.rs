//! The `authorization` header: `Basic base64(user:password)` or `Bearer
//! <token>`. Our own parsing (the design card keeps it in view of auditors),
//! over the `base64` crate's strict RFC 4648 decoder.

use std::fmt;

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine as _;

use super::{unauthenticated, INVALID_TOKEN, NO_CREDENTIALS};
use crate::error::Result;

/// Longest `authorization` header value accepted; real ones are far shorter.
const MAX_HEADER_BYTES: usize = 4096;

/// Credentials parsed from an `authorization` header (or a `BasicAuth`
/// handshake payload).
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

/// Parses an `authorization` header value, the scheme word in any case.
/// Errors are Unauthenticated and never echo the value.
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

/// Standard base64 with padding (RFC 4648 section 4), as HTTP Basic uses.
pub fn base64_encode(input: &[u8]) -> String {
    STANDARD.encode(input)
}

/// Decodes standard, padded base64 (RFC 4648 section 4) and nothing else:
/// no URL-safe alphabet, no missing or extra padding, no stray bits. `None` if
/// malformed.
pub fn base64_decode(input: &str) -> Option<Vec<u8>> {
    STANDARD.decode(input).ok()
}

/// URL-safe base64 without padding (RFC 4648 section 5), for tokens.
pub fn base64_url(input: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(input)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tonic::Code;

    #[test]
    fn base64_roundtrips_and_rejects_what_rfc_4648_rejects() {
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
        for bad in [
            "Zm9v!",    // not in the alphabet
            "Z",        // a lone symbol
            "Zm8",      // padding missing
            "Zm8==",    // too much padding
            "Zm8=Zm8=", // padding in the middle
            "Zm-_",     // URL-safe alphabet
            "Zm+/Zm-_", // mixed alphabets
            "Zh==",     // non-zero trailing bits
            "Zm9v ",    // whitespace
        ] {
            assert!(base64_decode(bad).is_none(), "{bad:?} was accepted");
        }
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
            (b"Basic dGVzdDpwYXNzd29yZA".to_vec(), "base64"),
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
}
