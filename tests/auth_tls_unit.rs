//! TLS builders exercised through real handshakes over loopback, with rcgen certificates.

use std::path::{Path, PathBuf};
use std::time::Duration;

use pgrelay::config::SslMode;
use pgrelay::tls::{
    client_acceptor, server_connector, server_name, ClientTlsSettings, ServerTls,
    ServerTlsSettings, TlsError,
};
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const STEP_TIMEOUT: Duration = Duration::from_secs(10);
const SERVER_HOST: &str = "db.example.com";

/// PEM files for one test, in a temp dir that lives as long as this value.
struct Pki {
    dir: tempfile::TempDir,
}

impl Pki {
    fn new() -> Self {
        Pki {
            dir: tempfile::tempdir().unwrap(),
        }
    }

    fn write(&self, name: &str, pem: &str) -> PathBuf {
        let path = self.dir.path().join(name);
        std::fs::write(&path, pem).unwrap();
        path
    }

    /// A CA; returns the issuer and writes `<name>.crt`.
    fn ca(&self, name: &str) -> (CertifiedIssuer<'static, KeyPair>, PathBuf) {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        let issuer = CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap();
        let path = self.write(&format!("{name}.crt"), &issuer.pem());
        (issuer, path)
    }

    /// A leaf certificate for `names`, signed by `issuer` or self-signed; returns (cert, key).
    fn leaf(
        &self,
        name: &str,
        names: &[&str],
        issuer: Option<&CertifiedIssuer<'static, KeyPair>>,
    ) -> (PathBuf, PathBuf) {
        let key = KeyPair::generate().unwrap();
        let params =
            CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
                .unwrap();
        let cert = match issuer {
            Some(issuer) => params.signed_by(&key, issuer).unwrap(),
            None => params.self_signed(&key).unwrap(),
        };
        (
            self.write(&format!("{name}.crt"), &cert.pem()),
            self.write(&format!("{name}.key"), &key.serialize_pem()),
        )
    }
}

fn client_settings(mode: SslMode, cert: &Path, key: &Path, ca: Option<&Path>) -> ClientTlsSettings {
    ClientTlsSettings {
        mode,
        cert_file: cert.to_path_buf(),
        key_file: key.to_path_buf(),
        ca_file: ca.map(Path::to_path_buf),
    }
}

fn server_settings(mode: SslMode, ca: Option<&Path>) -> ServerTlsSettings {
    ServerTlsSettings {
        mode,
        ca_file: ca.map(Path::to_path_buf),
        cert_file: None,
        key_file: None,
    }
}

/// One TLS round trip: a server accepting with `acceptor_settings`, a client connecting
/// with `connector_settings` and presenting `host`. Ok when both sides exchanged data.
async fn handshake(
    acceptor_settings: &ClientTlsSettings,
    connector_settings: &ServerTlsSettings,
    host: &str,
) -> Result<(), String> {
    let acceptor = client_acceptor(acceptor_settings).map_err(|e| e.to_string())?;
    let connector = server_connector(connector_settings)
        .map_err(|e| e.to_string())?
        .expect("mode starts TLS");
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.map_err(|e| e.to_string())?;
        let mut tls = acceptor.accept(tcp).await.map_err(|e| e.to_string())?;
        let alpn = tls.get_ref().1.alpn_protocol().map(<[u8]>::to_vec);
        let mut ping = [0u8; 4];
        tls.read_exact(&mut ping).await.map_err(|e| e.to_string())?;
        tls.write_all(b"pong").await.map_err(|e| e.to_string())?;
        tls.shutdown().await.map_err(|e| e.to_string())?;
        Ok::<_, String>((ping, alpn))
    });
    let client = async {
        let tcp = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
        let name = server_name(host).map_err(|e| e.to_string())?;
        let mut tls = connector
            .connect(name, tcp)
            .await
            .map_err(|e| e.to_string())?;
        tls.write_all(b"ping").await.map_err(|e| e.to_string())?;
        let mut pong = [0u8; 4];
        tls.read_exact(&mut pong).await.map_err(|e| e.to_string())?;
        assert_eq!(&pong, b"pong");
        Ok::<_, String>(())
    };
    let client_result = tokio::time::timeout(STEP_TIMEOUT, client)
        .await
        .map_err(|_| "client timed out".to_string())?;
    let server_result = tokio::time::timeout(STEP_TIMEOUT, server)
        .await
        .map_err(|_| "server timed out".to_string())?
        .unwrap();
    client_result?;
    let (ping, alpn) = server_result?;
    assert_eq!(&ping, b"ping");
    assert_eq!(alpn.as_deref(), Some(&b"postgresql"[..]));
    Ok(())
}

#[tokio::test]
async fn require_accepts_a_self_signed_certificate() {
    let pki = Pki::new();
    let (cert, key) = pki.leaf("self", &["localhost"], None);
    let acceptor = client_settings(SslMode::Require, &cert, &key, None);
    for mode in [SslMode::Require, SslMode::Prefer] {
        handshake(&acceptor, &server_settings(mode, None), "127.0.0.1")
            .await
            .unwrap();
    }
}

#[tokio::test]
async fn verify_ca_checks_the_chain_but_not_the_name() {
    let pki = Pki::new();
    let (ca, ca_file) = pki.ca("ca");
    let (cert, key) = pki.leaf("server", &[SERVER_HOST], Some(&ca));
    let acceptor = client_settings(SslMode::Require, &cert, &key, None);
    let verify_ca = server_settings(SslMode::VerifyCa, Some(&ca_file));
    handshake(&acceptor, &verify_ca, "wrong.example.com")
        .await
        .unwrap();
    handshake(&acceptor, &verify_ca, "127.0.0.1").await.unwrap();
}

#[tokio::test]
async fn verify_ca_refuses_another_ca_and_self_signed() {
    let pki = Pki::new();
    let (_ca, ca_file) = pki.ca("ca");
    let (other_ca, _) = pki.ca("other-ca");
    let verify_ca = server_settings(SslMode::VerifyCa, Some(&ca_file));

    let (cert, key) = pki.leaf("foreign", &[SERVER_HOST], Some(&other_ca));
    let acceptor = client_settings(SslMode::Require, &cert, &key, None);
    let err = handshake(&acceptor, &verify_ca, SERVER_HOST)
        .await
        .unwrap_err();
    assert!(err.contains("UnknownIssuer"), "{err}");

    let (cert, key) = pki.leaf("self", &[SERVER_HOST], None);
    let acceptor = client_settings(SslMode::Require, &cert, &key, None);
    assert!(handshake(&acceptor, &verify_ca, SERVER_HOST).await.is_err());
}

#[tokio::test]
async fn verify_full_checks_the_name() {
    let pki = Pki::new();
    let (ca, ca_file) = pki.ca("ca");
    let (cert, key) = pki.leaf("server", &[SERVER_HOST, "127.0.0.1"], Some(&ca));
    let acceptor = client_settings(SslMode::Require, &cert, &key, None);
    let verify_full = server_settings(SslMode::VerifyFull, Some(&ca_file));
    handshake(&acceptor, &verify_full, SERVER_HOST)
        .await
        .unwrap();
    handshake(&acceptor, &verify_full, "127.0.0.1")
        .await
        .unwrap();
    let err = handshake(&acceptor, &verify_full, "wrong.example.com")
        .await
        .unwrap_err();
    assert!(err.contains("not valid for name"), "{err}");
    assert!(handshake(&acceptor, &verify_full, "127.0.0.2")
        .await
        .is_err());
}

#[tokio::test]
async fn client_certificates_are_required_in_verify_modes() {
    let pki = Pki::new();
    let (ca, ca_file) = pki.ca("ca");
    let (other_ca, _) = pki.ca("other-ca");
    let (server_cert, server_key) = pki.leaf("server", &[SERVER_HOST], Some(&ca));
    let (client_cert, client_key) = pki.leaf("client", &["app"], Some(&ca));
    let (rogue_cert, rogue_key) = pki.leaf("rogue", &["app"], Some(&other_ca));
    let acceptor = client_settings(SslMode::VerifyCa, &server_cert, &server_key, Some(&ca_file));

    let with_cert = |cert: &Path, key: &Path| ServerTlsSettings {
        cert_file: Some(cert.to_path_buf()),
        key_file: Some(key.to_path_buf()),
        ..server_settings(SslMode::VerifyFull, Some(&ca_file))
    };
    handshake(
        &acceptor,
        &with_cert(&client_cert, &client_key),
        SERVER_HOST,
    )
    .await
    .unwrap();
    let no_cert = server_settings(SslMode::VerifyFull, Some(&ca_file));
    assert!(handshake(&acceptor, &no_cert, SERVER_HOST).await.is_err());
    assert!(
        handshake(&acceptor, &with_cert(&rogue_cert, &rogue_key), SERVER_HOST)
            .await
            .is_err()
    );
    // Without a verify mode no client certificate is asked for.
    let relaxed = client_settings(SslMode::Require, &server_cert, &server_key, Some(&ca_file));
    handshake(&relaxed, &no_cert, SERVER_HOST).await.unwrap();
}

#[test]
fn modes_without_tls_build_no_connector() {
    for mode in [SslMode::Disable, SslMode::Allow] {
        assert!(server_connector(&server_settings(mode, None))
            .unwrap()
            .is_none());
        let tls = ServerTls::from_settings(&server_settings(mode, None)).unwrap();
        assert!(matches!(tls, ServerTls::Disabled));
    }
    let prefer = ServerTls::from_settings(&server_settings(SslMode::Prefer, None)).unwrap();
    assert!(prefer.plaintext_fallback_allowed());
    let require = ServerTls::from_settings(&server_settings(SslMode::Require, None)).unwrap();
    assert!(!require.plaintext_fallback_allowed());
    assert!(matches!(
        require,
        ServerTls::Enabled {
            mode: SslMode::Require,
            ..
        }
    ));
}

fn connector_error(settings: &ServerTlsSettings) -> TlsError {
    server_connector(settings)
        .err()
        .expect("settings must be refused")
}

fn acceptor_error(settings: &ClientTlsSettings) -> TlsError {
    client_acceptor(settings)
        .err()
        .expect("settings must be refused")
}

#[test]
fn configuration_errors_name_the_problem() {
    let pki = Pki::new();
    let missing = pki.dir.path().join("missing.crt");
    for mode in [SslMode::VerifyCa, SslMode::VerifyFull] {
        let err = connector_error(&server_settings(mode, None));
        assert!(matches!(err, TlsError::CaFileRequired(m) if m == mode));
    }
    let err = connector_error(&server_settings(SslMode::VerifyCa, Some(&missing)));
    assert!(err.to_string().contains("missing.crt"), "{err}");
    assert_eq!(err.sqlstate(), "F0000");

    let garbage = pki.write("garbage.crt", "not a certificate\n");
    let err = connector_error(&server_settings(SslMode::VerifyCa, Some(&garbage)));
    assert!(matches!(err, TlsError::NoCertificates { .. }), "{err}");
    assert!(err.to_string().contains("garbage.crt"), "{err}");

    let (cert, key) = pki.leaf("server", &[SERVER_HOST], None);
    let half = ServerTlsSettings {
        cert_file: Some(cert.clone()),
        ..server_settings(SslMode::Require, None)
    };
    assert!(matches!(
        connector_error(&half),
        TlsError::IncompleteClientCertificate
    ));

    let err = acceptor_error(&client_settings(SslMode::Require, &cert, &missing, None));
    assert!(matches!(err, TlsError::ReadKey { .. }), "{err}");
    assert!(err.to_string().contains("missing.crt"), "{err}");

    let (_, other_key) = pki.leaf("other", &[SERVER_HOST], None);
    let err = acceptor_error(&client_settings(SslMode::Require, &cert, &other_key, None));
    assert!(matches!(err, TlsError::CertificateKey { .. }), "{err}");

    let err = acceptor_error(&client_settings(SslMode::VerifyCa, &cert, &key, None));
    assert!(matches!(err, TlsError::CaFileRequired(SslMode::VerifyCa)));
}

#[test]
fn server_names_accept_hosts_and_addresses() {
    assert_eq!(
        server_name("db.example.com").unwrap().to_str(),
        "db.example.com"
    );
    assert_eq!(server_name("10.1.2.3").unwrap().to_str(), "10.1.2.3");
    assert_eq!(server_name("[::1]").unwrap().to_str(), "::1");
    assert_eq!(server_name("::1").unwrap().to_str(), "::1");
    let err = server_name("/var/run/postgresql").unwrap_err();
    assert!(matches!(err, TlsError::InvalidServerName(_)));
    assert_eq!(err.sqlstate(), "08006");
    assert!(server_name("").is_err());
}
