//! rustls configurations for both sides, with libpq's meaning of each sslmode.
//! Builds configs only; the handshakes happen in the frontend/backend.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::server::WebPkiClientVerifier;
use rustls::{CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore, ServerConfig};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use tokio_rustls::{TlsAcceptor, TlsConnector};

use crate::config::SslMode;

/// ALPN protocol name PostgreSQL 17+ uses (required for direct TLS, harmless otherwise).
const POSTGRES_ALPN: &[u8] = b"postgresql";

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read certificates from {path}: {source}")]
    ReadCertificates {
        path: PathBuf,
        source: rustls_pki_types::pem::Error,
    },
    #[error("no certificate found in {path}")]
    NoCertificates { path: PathBuf },
    #[error("cannot read private key from {path}: {source}")]
    ReadKey {
        path: PathBuf,
        source: rustls_pki_types::pem::Error,
    },
    #[error("invalid CA certificate in {path}: {source}")]
    InvalidCa {
        path: PathBuf,
        source: rustls::Error,
    },
    #[error("cannot use CA file {path} to verify certificates: {source}")]
    Verifier {
        path: PathBuf,
        source: rustls::client::VerifierBuilderError,
    },
    #[error("sslmode {0} needs a CA file to verify certificates against")]
    CaFileRequired(SslMode),
    #[error("a client certificate needs both a certificate file and a key file")]
    IncompleteClientCertificate,
    #[error("certificate {cert} and key {key} cannot be used together: {source}")]
    CertificateKey {
        cert: PathBuf,
        key: PathBuf,
        source: rustls::Error,
    },
    #[error("invalid TLS settings: {0}")]
    Config(#[from] rustls::Error),
    #[error("{0:?} is not a valid TLS server name (host name or IP address)")]
    InvalidServerName(String),
}

impl TlsError {
    pub fn sqlstate(&self) -> &'static str {
        match self {
            // Decided per connection attempt, so it surfaces as a failed connection.
            Self::InvalidServerName(_) => "08006",
            // Everything else is a bad setting or file: config_file_error.
            _ => "F0000",
        }
    }
}

/// TLS towards PostgreSQL servers (`server_tls_*`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerTlsSettings {
    pub mode: SslMode,
    pub ca_file: Option<PathBuf>,
    pub cert_file: Option<PathBuf>,
    pub key_file: Option<PathBuf>,
}

/// A ready-to-use server TLS policy for the backend.
#[derive(Clone)]
pub enum ServerTls {
    Disabled,
    Enabled {
        connector: TlsConnector,
        mode: SslMode,
    },
}

impl ServerTls {
    pub fn from_settings(settings: &ServerTlsSettings) -> Result<ServerTls, TlsError> {
        Ok(match server_connector(settings)? {
            Some(connector) => ServerTls::Enabled {
                connector,
                mode: settings.mode,
            },
            None => ServerTls::Disabled,
        })
    }

    /// `prefer` falls back to plaintext when the server refuses TLS; stricter modes do not.
    pub fn plaintext_fallback_allowed(&self) -> bool {
        match self {
            ServerTls::Disabled => true,
            ServerTls::Enabled { mode, .. } => matches!(mode, SslMode::Prefer),
        }
    }
}

impl std::fmt::Debug for ServerTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ServerTls::Disabled => f.write_str("ServerTls::Disabled"),
            ServerTls::Enabled { mode, .. } => write!(f, "ServerTls::Enabled({mode})"),
        }
    }
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Connector for `s.mode`, or `None` when the mode never starts TLS (`disable`, `allow`).
pub fn server_connector(s: &ServerTlsSettings) -> Result<Option<TlsConnector>, TlsError> {
    let provider = provider();
    let verifier: Arc<dyn ServerCertVerifier> = match s.mode {
        SslMode::Disable | SslMode::Allow => return Ok(None),
        SslMode::Prefer | SslMode::Require => Arc::new(RelaxedVerifier {
            check: RelaxedCheck::NoCertificateCheck,
            algorithms: provider.signature_verification_algorithms,
        }),
        SslMode::VerifyCa | SslMode::VerifyFull => {
            let ca_file = s
                .ca_file
                .as_deref()
                .ok_or(TlsError::CaFileRequired(s.mode))?;
            let roots = Arc::new(load_roots(ca_file)?);
            let webpki = WebPkiServerVerifier::builder_with_provider(roots, provider.clone())
                .build()
                .map_err(|source| TlsError::Verifier {
                    path: ca_file.to_path_buf(),
                    source,
                })?;
            if s.mode == SslMode::VerifyCa {
                Arc::new(RelaxedVerifier {
                    check: RelaxedCheck::ChainOnly(webpki),
                    algorithms: provider.signature_verification_algorithms,
                })
            } else {
                webpki
            }
        }
    };
    let builder = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .dangerous()
        .with_custom_certificate_verifier(verifier);
    let mut config = match (&s.cert_file, &s.key_file) {
        (Some(cert), Some(key)) => builder
            .with_client_auth_cert(load_certs(cert)?, load_key(key)?)
            .map_err(|source| TlsError::CertificateKey {
                cert: cert.clone(),
                key: key.clone(),
                source,
            })?,
        (None, None) => builder.with_no_client_auth(),
        _ => return Err(TlsError::IncompleteClientCertificate),
    };
    config.alpn_protocols = vec![POSTGRES_ALPN.to_vec()];
    Ok(Some(TlsConnector::from(Arc::new(config))))
}

/// The name to present and (in `verify-full`) check: a DNS name or an IP address.
/// IPv6 may be written in brackets, as in URLs.
pub fn server_name(host: &str) -> Result<ServerName<'static>, TlsError> {
    let bare = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    ServerName::try_from(bare.to_string()).map_err(|_| TlsError::InvalidServerName(host.into()))
}

/// TLS towards clients (`client_tls_*`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientTlsSettings {
    pub mode: SslMode,
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
    pub ca_file: Option<PathBuf>,
}

/// Acceptor presenting `cert_file`/`key_file`. In `verify-ca` and `verify-full` the
/// client must present a certificate that chains to `ca_file` (as in PgBouncer; matching
/// the certificate's name to the user is left to the caller, via the peer certificates);
/// other modes ask for no client certificate.
pub fn client_acceptor(s: &ClientTlsSettings) -> Result<TlsAcceptor, TlsError> {
    let provider = provider();
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()?;
    let builder = match s.mode {
        SslMode::VerifyCa | SslMode::VerifyFull => {
            let ca_file = s
                .ca_file
                .as_deref()
                .ok_or(TlsError::CaFileRequired(s.mode))?;
            let roots = Arc::new(load_roots(ca_file)?);
            let verifier = WebPkiClientVerifier::builder_with_provider(roots, provider)
                .build()
                .map_err(|source| TlsError::Verifier {
                    path: ca_file.to_path_buf(),
                    source,
                })?;
            builder.with_client_cert_verifier(verifier)
        }
        _ => builder.with_no_client_auth(),
    };
    let certs = load_certs(&s.cert_file)?;
    let key = load_key(&s.key_file)?;
    let mut config =
        builder
            .with_single_cert(certs, key)
            .map_err(|source| TlsError::CertificateKey {
                cert: s.cert_file.clone(),
                key: s.key_file.clone(),
                source,
            })?;
    config.alpn_protocols = vec![POSTGRES_ALPN.to_vec()];
    Ok(TlsAcceptor::from(Arc::new(config)))
}

fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let read_error = |source| TlsError::ReadCertificates {
        path: path.to_path_buf(),
        source,
    };
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(read_error)?
        .collect::<Result<Vec<_>, _>>()
        .map_err(read_error)?;
    if certs.is_empty() {
        return Err(TlsError::NoCertificates {
            path: path.to_path_buf(),
        });
    }
    Ok(certs)
}

fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    PrivateKeyDer::from_pem_file(path).map_err(|source| TlsError::ReadKey {
        path: path.to_path_buf(),
        source,
    })
}

fn load_roots(path: &Path) -> Result<RootCertStore, TlsError> {
    let mut roots = RootCertStore::empty();
    for cert in load_certs(path)? {
        roots.add(cert).map_err(|source| TlsError::InvalidCa {
            path: path.to_path_buf(),
            source,
        })?;
    }
    Ok(roots)
}

/// How much of the server certificate the libpq-style modes below verify-full check.
#[derive(Debug)]
enum RelaxedCheck {
    /// `prefer`/`require`: encryption without authentication, as libpq does.
    NoCertificateCheck,
    /// `verify-ca`: the chain must verify, the host name is not checked. WebPki checks
    /// the chain before the name, so a name mismatch error means the chain was good.
    ChainOnly(Arc<WebPkiServerVerifier>),
}

/// Certificate check per [`RelaxedCheck`]. Handshake signatures are always verified, so
/// the peer must own the key of the certificate it presents.
#[derive(Debug)]
struct RelaxedVerifier {
    check: RelaxedCheck,
    algorithms: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for RelaxedVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let webpki = match &self.check {
            RelaxedCheck::NoCertificateCheck => return Ok(ServerCertVerified::assertion()),
            RelaxedCheck::ChainOnly(webpki) => webpki,
        };
        match webpki.verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
        {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}
