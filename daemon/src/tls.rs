//! TLS for the Peer API (rustls, ring).
//!
//! - The serving daemon's certificate: files named in the config, or a
//!   self-signed one made on first use and kept in `<store>/peer-tls/`
//!   (key mode 0600). Its fingerprint is `blake3:<hex>` of the certificate's
//!   DER bytes, shown by `hoard daemon status`.
//! - A syncing daemon trusts a hub by a pinned fingerprint (what a
//!   self-signed hub needs), by a CA certificate file, or by the system's
//!   roots.
//!
//! Floor 2: may import `durable` and `error` only (used by the Peer server
//! and client).

use crate::error::{Error, Result};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use std::path::Path;
use std::sync::Arc;
use tonic::transport::{Channel, ClientTlsConfig, Endpoint, Uri};

/// `blake3:<hex>` of a certificate's DER bytes.
pub fn fingerprint(der: &[u8]) -> String {
    format!("blake3:{}", blake3::hash(der).to_hex())
}

/// The serving side's certificate and key (PEM) and the certificate's
/// fingerprint.
pub struct ServerCert {
    pub cert_pem: String,
    pub key_pem: String,
    pub fingerprint: String,
}

/// The certificate to serve: `cert`/`key` when given, else the store's
/// self-signed one (made on first use).
pub fn server_cert(store: &Path, cert: Option<&Path>, key: Option<&Path>) -> Result<ServerCert> {
    let read = |p: &Path| std::fs::read_to_string(p).map_err(|e| Error::io("cannot read", p, e));
    let (cert_pem, key_pem) = match (cert, key) {
        (Some(c), Some(k)) => (read(c)?, read(k)?),
        (None, None) => {
            let dir = store.join("peer-tls");
            let (c, k) = (dir.join("cert.pem"), dir.join("key.pem"));
            if c.exists() && k.exists() {
                (read(&c)?, read(&k)?)
            } else {
                std::fs::create_dir_all(&dir).map_err(|e| Error::io("cannot create", &dir, e))?;
                let host = std::fs::read_to_string("/etc/hostname")
                    .map(|h| h.trim().to_string())
                    .unwrap_or_default();
                let mut names = vec!["localhost".to_string(), "hoard".to_string()];
                if !host.is_empty() {
                    names.push(host);
                }
                let made = rcgen::generate_simple_self_signed(names)
                    .map_err(|e| Error::Invalid(format!("cannot make a TLS certificate: {e}")))?;
                let (cp, kp) = (made.cert.pem(), made.signing_key.serialize_pem());
                write_private(&k, &kp)?;
                write_private(&c, &cp)?;
                (cp, kp)
            }
        }
        _ => {
            return Err(Error::Invalid(
                "[peer] tls_cert and tls_key go together: give both, or neither for a self-signed certificate".into(),
            ))
        }
    };
    let der = CertificateDer::from_pem_slice(cert_pem.as_bytes())
        .map_err(|e| Error::Invalid(format!("the peer TLS certificate is not PEM: {e}")))?;
    Ok(ServerCert {
        fingerprint: fingerprint(&der),
        cert_pem,
        key_pem,
    })
}

/// Writes a key or certificate (mode 0600) over whatever a crash left.
fn write_private(path: &Path, text: &str) -> Result<()> {
    crate::durable::replace(path, text.as_bytes(), 0o600)
}

/// How a syncing daemon trusts the hub it connects to over TLS.
#[derive(Debug, Clone)]
pub enum Trust {
    /// The hub's certificate must have this fingerprint (`blake3:<hex>`).
    Pinned(String),
    /// The hub's certificate must chain to this CA (PEM).
    Ca(Vec<u8>),
    /// The system's trusted roots.
    System,
}

/// Connects to `https://HOST:PORT` with `trust`.
pub async fn connect(
    url: &str,
    trust: &Trust,
    tune: impl Fn(Endpoint) -> Endpoint,
) -> Result<Channel> {
    let uri: Uri = url
        .parse()
        .map_err(|e| Error::Invalid(format!("bad remote URL {url:?}: {e}")))?;
    let host = uri
        .host()
        .ok_or_else(|| Error::Invalid(format!("remote URL {url:?} has no host")))?
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_string();
    let port = uri.port_u16().unwrap_or(7420);
    let unreachable = |e: &dyn std::fmt::Display| {
        let e = e.to_string();
        let hint = if e.contains("UnknownIssuer") || e.contains("NotValidForName") {
            "its certificate is not one this daemon trusts: pin it with `hoard remote add NAME URL --fingerprint blake3:…` (the hub's `hoard daemon status` prints it), or give its CA with --ca"
        } else {
            "is its daemon running with `listen` and TLS on?"
        };
        Error::Transient(format!("cannot reach {url}: {e}; {hint}"))
    };
    match trust {
        Trust::Pinned(fp) => {
            let provider = Arc::new(rustls::crypto::ring::default_provider());
            let mut config = rustls::ClientConfig::builder_with_provider(provider.clone())
                .with_safe_default_protocol_versions()
                .map_err(|e| Error::Invalid(format!("TLS setup: {e}")))?
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(Pinned {
                    fingerprint: fp.clone(),
                    provider,
                }))
                .with_no_client_auth();
            config.alpn_protocols = vec![b"h2".to_vec()];
            let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
            let name = ServerName::try_from(host.clone())
                .map_err(|e| Error::Invalid(format!("bad host in {url:?}: {e}")))?;
            let endpoint = tune(
                Endpoint::from_shared(format!("http://{host}:{port}"))
                    .map_err(|e| Error::Invalid(format!("bad remote URL {url:?}: {e}")))?,
            );
            endpoint
                .connect_with_connector(tower::service_fn(move |_: Uri| {
                    let (connector, name, host) = (connector.clone(), name.clone(), host.clone());
                    async move {
                        let tcp = tokio::net::TcpStream::connect((host.as_str(), port)).await?;
                        tcp.set_nodelay(true)?;
                        let tls = connector.connect(name, tcp).await?;
                        Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(tls))
                    }
                }))
                .await
                .map_err(|e| unreachable(&error_chain(&e)))
        }
        Trust::Ca(_) | Trust::System => {
            let tls = match trust {
                Trust::Ca(pem) => ClientTlsConfig::new()
                    .ca_certificate(tonic::transport::Certificate::from_pem(pem)),
                _ => ClientTlsConfig::new().with_native_roots(),
            };
            tune(
                Endpoint::from_shared(url.to_string())
                    .map_err(|e| Error::Invalid(e.to_string()))?,
            )
            .tls_config(tls.domain_name(host))
            .map_err(|e| Error::Invalid(format!("TLS setup: {e}")))?
            .connect()
            .await
            .map_err(|e| unreachable(&error_chain(&e)))
        }
    }
}

/// The innermost cause of an error (where TLS failures are named).
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut last = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        last = c.to_string();
        cur = c.source();
    }
    last
}

/// Accepts exactly the certificate with the pinned fingerprint (names and
/// dates do not matter: the pin is the identity), and checks the handshake
/// signatures as usual.
#[derive(Debug)]
struct Pinned {
    fingerprint: String,
    provider: Arc<rustls::crypto::CryptoProvider>,
}

impl ServerCertVerifier for Pinned {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> std::result::Result<ServerCertVerified, rustls::Error> {
        let got = fingerprint(end_entity);
        if got == self.fingerprint {
            Ok(ServerCertVerified::assertion())
        } else {
            Err(rustls::Error::General(format!(
                "the hub's certificate is {got}, not the pinned {}; if the hub's certificate changed on purpose, `hoard remote add` it again with the new fingerprint",
                self.fingerprint
            )))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_left_alone_by_a_crash_is_replaced_with_a_new_pair() {
        let d = tempfile::tempdir().unwrap();
        let dir = d.path().join("peer-tls");
        std::fs::create_dir_all(&dir).unwrap();
        // The key was written, then the daemon died before the certificate.
        std::fs::write(dir.join("key.pem"), "half a key").unwrap();
        let made = server_cert(d.path(), None, None).unwrap();
        assert!(
            made.fingerprint.starts_with("blake3:"),
            "{}",
            made.fingerprint
        );
        // The next start serves the same pair.
        let again = server_cert(d.path(), None, None).unwrap();
        assert_eq!(again.fingerprint, made.fingerprint);
        assert_eq!(
            std::fs::read_to_string(dir.join("key.pem")).unwrap(),
            made.key_pem
        );
    }
}
