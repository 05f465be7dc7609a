//! TLS in hangar's own accept path: the rustls server configuration built from
//! the PEM files, and a handshake that, when it fails, says why in words an
//! operator can act on (`tls: client sent no certificate`, `tls: certificate
//! not signed by --tls-client-ca (CN=mallory)`, ...). tonic's own TLS
//! acceptor would drop those reasons silently.

use std::cell::RefCell;
use std::io;
use std::sync::Arc;

use tokio::net::TcpStream;
use tokio_rustls::rustls::client::danger::HandshakeSignatureValid;
use tokio_rustls::rustls::pki_types::pem::PemObject as _;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer, UnixTime};
use tokio_rustls::rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use tokio_rustls::rustls::server::WebPkiClientVerifier;
use tokio_rustls::rustls::{
    self, CertificateError, DigitallySignedStruct, DistinguishedName, RootCertStore, ServerConfig,
    SignatureScheme,
};
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;

use crate::auth::certificate_subject;
use crate::log::shorten;

/// The first byte of every TLS connection: a handshake record.
const TLS_HANDSHAKE_RECORD: u8 = 0x16;

/// The rustls configuration for `--tls-cert`/`--tls-key`, requiring client
/// certificates signed by `client_ca` when given (mTLS). Errors name the flag.
pub fn server_config(
    cert_pem: &[u8],
    key_pem: &[u8],
    client_ca_pem: Option<&[u8]>,
) -> Result<Arc<ServerConfig>, String> {
    let certs = CertificateDer::pem_slice_iter(cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("--tls-cert: not a PEM certificate chain: {e}"))?;
    if certs.is_empty() {
        return Err("--tls-cert: no certificate in the file".into());
    }
    let key = PrivateKeyDer::from_pem_slice(key_pem)
        .map_err(|e| format!("--tls-key: no PEM private key found: {e}"))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS configuration: {e}"))?;
    let builder = match client_ca_pem {
        None => builder.with_no_client_auth(),
        Some(pem) => {
            let mut roots = RootCertStore::empty();
            for cert in CertificateDer::pem_slice_iter(pem) {
                let cert = cert.map_err(|e| format!("--tls-client-ca: not PEM: {e}"))?;
                roots
                    .add(cert)
                    .map_err(|e| format!("--tls-client-ca: unusable certificate: {e}"))?;
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .map_err(|e| format!("--tls-client-ca: {e}"))?;
            builder.with_client_cert_verifier(Arc::new(NoteSubject(verifier)))
        }
    };
    let mut config = builder
        .with_single_cert(certs, key)
        .map_err(|e| format!("--tls-cert/--tls-key: {e}"))?;
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(Arc::new(config))
}

/// A finished handshake and the subject of the client's certificate, if any.
pub type Established = (TlsStream<TcpStream>, Option<String>);

/// Runs the server side of a TLS handshake; on failure returns why, as a
/// connection line's reason. The caller bounds it in time.
pub async fn handshake(acceptor: TlsAcceptor, tcp: TcpStream) -> Result<Established, String> {
    let mut first = [0u8; 1];
    match tcp.peek(&mut first).await {
        Ok(0) => return Err("tls: client closed the connection before the handshake".into()),
        Ok(_) if first[0] != TLS_HANDSHAKE_RECORD => {
            return Err("tls: client spoke plaintext to a TLS port".into())
        }
        Ok(_) => {}
        Err(err) => return Err(format!("tls: {}", io_reason(&err))),
    }
    let (result, presented) = PRESENTED
        .scope(RefCell::new(None), async {
            let result = acceptor.accept(tcp).await;
            (result, PRESENTED.with(|slot| slot.borrow_mut().take()))
        })
        .await;
    match result {
        Ok(stream) => {
            let subject = stream
                .get_ref()
                .1
                .peer_certificates()
                .and_then(|certs| certs.first())
                .and_then(|cert| certificate_subject(cert));
            Ok((stream, subject))
        }
        Err(err) => Err(refusal(&err, presented.as_deref())),
    }
}

/// Why a handshake failed, from the rustls error inside `err`; `presented`
/// is the subject of the certificate the client sent, if it sent one.
fn refusal(err: &io::Error, presented: Option<&str>) -> String {
    let Some(tls) = err
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>())
    else {
        return format!("tls: {}", io_reason(err));
    };
    let cn = presented
        .map(|cn| format!(" (CN={})", shorten(cn)))
        .unwrap_or_default();
    match tls {
        rustls::Error::NoCertificatesPresented => "tls: client sent no certificate".into(),
        rustls::Error::InvalidCertificate(cert) => match cert {
            CertificateError::UnknownIssuer
            | CertificateError::BadSignature
            | CertificateError::UnsupportedSignatureAlgorithmContext { .. } => {
                format!("tls: certificate not signed by --tls-client-ca{cn}")
            }
            CertificateError::Expired | CertificateError::ExpiredContext { .. } => {
                format!("tls: certificate expired{cn}")
            }
            CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. } => {
                format!("tls: certificate not valid yet{cn}")
            }
            other => format!("tls: certificate refused{cn}: {other}"),
        },
        rustls::Error::AlertReceived(alert) => {
            format!(
                "tls: client aborted the handshake ({alert:?} alert; does it trust --tls-cert?)"
            )
        }
        rustls::Error::NoApplicationProtocol => {
            "tls: client does not speak HTTP/2 (no h2 in ALPN)".into()
        }
        other => format!("tls: {other}"),
    }
}

/// An I/O error during the handshake, in plain words.
fn io_reason(err: &io::Error) -> String {
    match err.kind() {
        io::ErrorKind::UnexpectedEof => "client closed the connection during the handshake".into(),
        io::ErrorKind::ConnectionReset => "client reset the connection during the handshake".into(),
        _ => err.to_string(),
    }
}

tokio::task_local! {
    /// The subject of the certificate the client presented during the
    /// handshake running on this task. rustls shares one verifier between all
    /// connections and passes it no connection, but calls it synchronously
    /// from inside the handshake future, so a task-local slot scoped around
    /// that future is per-connection.
    static PRESENTED: RefCell<Option<String>>;
}

/// The WebPKI client verifier, noting the presented certificate's subject
/// first so a refusal can name it.
#[derive(Debug)]
struct NoteSubject(Arc<dyn ClientCertVerifier>);

impl ClientCertVerifier for NoteSubject {
    fn offer_client_auth(&self) -> bool {
        self.0.offer_client_auth()
    }

    fn client_auth_mandatory(&self) -> bool {
        self.0.client_auth_mandatory()
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.0.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        let _ = PRESENTED.try_with(|slot| *slot.borrow_mut() = certificate_subject(end_entity));
        self.0.verify_client_cert(end_entity, intermediates, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}
