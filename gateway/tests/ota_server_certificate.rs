//! The update service without a configured certificate: the identity CA issues it at start,
//! for `[identity] server_names` and the listen address, so a device that trusts only the CA
//! it enrolled with completes a real TLS handshake with it; a client trusting another CA does
//! not.
use std::{path::PathBuf, sync::Arc};

use iotgw::{
    event::EventBus,
    ota::{
        self,
        repo::{InitOptions, Repository},
    },
    shutdown,
};
use rustls::pki_types::{CertificateDer, ServerName};

/// A scratch folder, removed on drop.
struct Scratch(PathBuf);

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A TLS client trusting only `root`, with no client certificate of its own.
fn client_trusting(root: CertificateDer<'static>) -> tokio_rustls::TlsConnector {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(root).expect("a usable root");
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_protocol_versions(&[&rustls::version::TLS13])
        .expect("TLS 1.3")
        .with_root_certificates(roots)
        .with_no_client_auth();
    tokio_rustls::TlsConnector::from(Arc::new(config))
}

#[tokio::test]
async fn without_a_configured_certificate_the_identity_ca_issues_the_servers() {
    let dir = std::env::temp_dir().join(format!("iotgw-ota-cert-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let scratch = Scratch(dir.clone());
    let store = dir.join("iotgw.db");
    {
        let conn = iotgw::schema::open(&store).unwrap();
        Repository::open(&dir.join("repo"), None)
            .init(&conn, &InitOptions { root_keys: 1, root_threshold: 1 })
            .unwrap();
    }
    let identity = iotgw::identity::Config {
        state_dir: dir.join("identity"),
        server_names: vec!["ota.gateway.test".into()],
        ..Default::default()
    };
    let config = ota::Config {
        enabled: true,
        listen: Some("127.0.0.1:0".parse().unwrap()),
        repo_dir: dir.join("repo"),
        device_ca: dir.join("identity").join(iotgw::identity::ca::CA_CERT_FILE),
        server_cert: None,
        server_key: None,
        ..Default::default()
    };
    assert!(config.problems().is_empty(), "{:?}", config.problems());
    let (trigger, shutdown) = shutdown::channel();
    let running = ota::spawn(&config, &identity, &store, EventBus::default(), shutdown).await.expect("ota starts");

    // The CA the identity service generated, as a device got it from EST /cacerts.
    let ca_pem = std::fs::read(&config.device_ca).expect("the identity CA was generated");
    let ca = rustls_pemfile::certs(&mut ca_pem.as_slice()).next().unwrap().unwrap();
    let tcp = tokio::net::TcpStream::connect(running.local_addr).await.unwrap();
    let name = ServerName::IpAddress(running.local_addr.ip().into());
    let tls = client_trusting(ca.clone()).connect(name.clone(), tcp).await.expect("the CA's client trusts the server");
    let chain = tls.get_ref().1.peer_certificates().expect("the server sent its chain").to_vec();
    let (_, leaf) = x509_parser::parse_x509_certificate(&chain[0]).unwrap();
    let (_, ca_cert) = x509_parser::parse_x509_certificate(&ca).unwrap();
    assert_eq!(leaf.issuer(), ca_cert.subject(), "issued by the identity CA");
    let names = &leaf.subject_alternative_name().unwrap().expect("SANs").value.general_names;
    use x509_parser::extensions::GeneralName;
    assert!(names.iter().any(|n| matches!(n, GeneralName::DNSName("ota.gateway.test"))), "{names:?}");
    let listen = [127, 0, 0, 1];
    assert!(
        names.iter().any(|n| matches!(n, GeneralName::IPAddress(ip) if *ip == listen)),
        "the listen address is named: {names:?}"
    );

    // A client that trusts another CA refuses the same server.
    let other = rcgen::generate_simple_self_signed(vec!["other-ca".to_owned()]).unwrap();
    let tcp = tokio::net::TcpStream::connect(running.local_addr).await.unwrap();
    let refused = client_trusting(other.cert.der().clone()).connect(name, tcp).await;
    assert!(refused.is_err(), "a server certificate from the identity CA only");

    trigger.trigger();
    let _ = iotgw_test_support::wait::within(
        "the OTA server to stop at shutdown",
        std::time::Duration::from_secs(10),
        running.handle,
    )
    .await;
    drop(scratch);
}

#[test]
fn a_certificate_without_its_key_is_refused() {
    let config = ota::Config { server_cert: Some("/etc/iotgw/ota.pem".into()), ..Default::default() };
    assert_eq!(config.problems().len(), 1, "{:?}", config.problems());
}
