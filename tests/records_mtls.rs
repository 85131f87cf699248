//! Client certificates (mTLS) mapped to roles, with certificates made by the test:
//! each role by certificate does exactly what it may, a certificate from another CA
//! fails the handshake, one whose names have no role is refused, the access log
//! names each certificate, and the switchboard's records client delivers events
//! presenting its certificate.

mod records_common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use courtline::contract::connect::{connect, ClientOptions, RecordsClient};
use courtline::contract::pb::{ListCallsRequest, LogEventsRequest, Role};
use courtline::records::service::ClientCertificates;
use courtline::switchboard::delivery::sender::RecordSender;
use courtline::switchboard::delivery::spool::Spool;
use rcgen::{
    BasicConstraints, Certificate, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, SanType,
};
use records_common::*;
use tonic::Code;

/// A certificate authority made for the test.
struct Authority {
    /// Its certificate.
    certificate: Certificate,
    /// Its key, to sign with.
    key: KeyPair,
}

impl Authority {
    fn new(name: &str) -> Authority {
        let mut params = CertificateParams::new(Vec::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        let key = KeyPair::generate().unwrap();
        let certificate = params.self_signed(&key).unwrap();
        Authority { certificate, key }
    }

    /// Signs a client certificate with subject common name `common_name` and these
    /// alternative names; writes it and its key to `dir`; returns both paths.
    fn client(
        &self,
        dir: &Path,
        file: &str,
        common_name: &str,
        names: Vec<SanType>,
    ) -> (PathBuf, PathBuf) {
        let mut params = CertificateParams::new(Vec::new()).unwrap();
        params
            .distinguished_name
            .push(DnType::CommonName, common_name);
        params.subject_alt_names = names;
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        let key = KeyPair::generate().unwrap();
        let certificate = params
            .signed_by(&key, &self.certificate, &self.key)
            .unwrap();
        let (cert_file, key_file) = (
            dir.join(format!("{file}.crt")),
            dir.join(format!("{file}.key")),
        );
        std::fs::write(&cert_file, certificate.pem()).unwrap();
        std::fs::write(&key_file, key.serialize_pem()).unwrap();
        (cert_file, key_file)
    }
}

fn dns(name: &str) -> SanType {
    SanType::DnsName(name.try_into().unwrap())
}

/// A client of `service` over TLS presenting `certificate` (no token).
async fn client_with(
    service: &Service,
    server_ca: &Path,
    certificate: Option<&(PathBuf, PathBuf)>,
) -> Result<RecordsClient, courtline::contract::connect::ClientError> {
    connect(&ClientOptions {
        endpoint: format!("https://localhost:{}", service.address.port()),
        tls_ca_file: Some(server_ca.to_path_buf()),
        client_certificate: certificate.cloned(),
        ..ClientOptions::default()
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_certificates_get_their_roles_and_strangers_get_nothing() {
    let db = sqlite_db();
    let dir = db.dir.path().to_path_buf();
    let server = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    let (server_cert, server_key) = (dir.join("records.crt"), dir.join("records.key"));
    std::fs::write(&server_cert, server.cert.pem()).unwrap();
    std::fs::write(&server_key, server.key_pair.serialize_pem()).unwrap();
    let clients_ca = Authority::new("courtline test client CA");
    let clients_ca_file = dir.join("clients-ca.crt");
    std::fs::write(&clients_ca_file, clients_ca.certificate.pem()).unwrap();

    // One certificate per role, each named a different way.
    let switchboard = clients_ca.client(&dir, "sb", "switchboard", vec![dns("sb-1.court.test")]);
    let compliance = clients_ca.client(&dir, "compliance", "合规科 张伟", Vec::new());
    let auditor = clients_ca.client(
        &dir,
        "auditor",
        "auditor",
        vec![SanType::URI(
            "spiffe://court.test/auditor".try_into().unwrap(),
        )],
    );
    let admin = clients_ca.client(
        &dir,
        "admin",
        "admin",
        vec![SanType::Rfc822Name("admin@court.test".try_into().unwrap())],
    );
    let stranger = clients_ca.client(
        &dir,
        "stranger",
        "stranger",
        vec![dns("stranger.court.test")],
    );
    // The switchboard's name, but signed by a CA the service does not trust.
    let forger = Authority::new("someone else's CA").client(
        &dir,
        "forged",
        "switchboard",
        vec![dns("sb-1.court.test")],
    );

    let mut settings = settings(&db);
    settings.tls = Some((server_cert.clone(), server_key));
    settings.client_certificates = Some(ClientCertificates {
        ca_file: clients_ca_file,
        roles: [
            ("sb-1.court.test", Role::Switchboard),
            ("合规科 张伟", Role::Compliance),
            ("spiffe://court.test/auditor", Role::Auditor),
            ("admin@court.test", Role::Admin),
        ]
        .into_iter()
        .map(|(name, role)| (name.to_owned(), role))
        .collect(),
    });
    let service = Service::start(&settings).await;
    // Call 1, which GetCall and FlagCall below look at.
    client_with(&service, &server_cert, Some(&switchboard))
        .await
        .unwrap()
        .log_events(LogEventsRequest {
            events: numbered("sb-1", 1, complete_calls([1])),
        })
        .await
        .unwrap();

    let mut node_seq = 10;
    for (role, certificate) in [
        (Role::Switchboard, &switchboard),
        (Role::Compliance, &compliance),
        (Role::Auditor, &auditor),
        (Role::Admin, &admin),
    ] {
        let mut client = client_with(&service, &server_cert, Some(certificate))
            .await
            .unwrap();
        for operation in OPERATIONS {
            node_seq += 1;
            let expected = if allowed(role, operation) {
                Ok(())
            } else {
                Err(Code::PermissionDenied)
            };
            assert_eq!(
                attempt(&mut client, operation, node_seq).await,
                expected,
                "{role:?} certificate, {operation}"
            );
        }
    }

    // A certificate whose names have no role is refused; so is no certificate (the
    // loopback rule is off once certificates have roles).
    for certificate in [Some(&stranger), None] {
        let mut client = client_with(&service, &server_cert, certificate)
            .await
            .unwrap();
        let status = client
            .list_calls(ListCallsRequest::default())
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");
    }
    // A certificate from another CA does not get through the handshake.
    // (TLS 1.3 may finish the client's side first: then the first request fails.)
    let forged = match client_with(&service, &server_cert, Some(&forger)).await {
        Ok(mut client) => client.list_calls(ListCallsRequest::default()).await.err(),
        Err(error) => Some(tonic::Status::unavailable(error.to_string())),
    };
    let forged = forged.expect("a certificate from an untrusted CA was accepted");
    assert!(
        matches!(
            forged.code(),
            Code::Unavailable | Code::Unknown | Code::Cancelled
        ),
        "refused by TLS, not by a role check: {forged:?}"
    );

    // The access log names each certificate by the name that matched.
    let mut auditor = client_with(&service, &server_cert, Some(&auditor))
        .await
        .unwrap();
    let log = access_log(&mut auditor).await;
    let actors = |operation: &str| -> Vec<String> {
        log.iter()
            .filter(|entry| entry.operation == operation)
            .map(|entry| format!("{} as {}", entry.actor, entry.role))
            .collect()
    };
    assert_eq!(actors("ListCalls"), ["cert:合规科 张伟 as compliance"]);
    assert_eq!(
        actors("Verify"),
        ["cert:spiffe://court.test/auditor as auditor"]
    );
    assert_eq!(actors("Purge"), ["cert:admin@court.test as admin"]);

    // The switchboard's records client presents its certificate and delivers.
    let spool_dir = dir.join("spool");
    let (spool, recovered) = Spool::open(&spool_dir, Some("sb-mtls")).unwrap();
    let (sender, delivery) = RecordSender::spawn(
        spool,
        recovered,
        ClientOptions {
            endpoint: format!("https://localhost:{}", service.address.port()),
            tls_ca_file: Some(server_cert.clone()),
            client_certificate: Some(switchboard.clone()),
            ..ClientOptions::default()
        },
    );
    sender.send(record(7));
    drop(sender);
    let stats = delivery.finish(Duration::from_secs(10)).await;
    // Its start-up event and the call's record.
    assert_eq!((stats.delivered, stats.left_in_spool), (2, 0), "{stats:?}");
    let mut compliance = client_with(&service, &server_cert, Some(&compliance))
        .await
        .unwrap();
    let page = compliance
        .list_calls(ListCallsRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert!(short_ids(&page.records).contains(&7), "{:?}", page.records);
    service.stop().await;
}
