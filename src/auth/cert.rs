//! Who a TLS client certificate names, for logs: a small, tolerant walk of the
//! DER structure that returns `None` rather than failing on anything odd (the
//! TLS layer has already verified the certificate; this only reads it).

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

#[cfg(test)]
mod tests {
    use super::*;

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
}
