//! The console's administration, integrity and access-log flows at the HTTP level
//! (hyper's client on real sockets, plain and TLS): a token's secret is shown once,
//! revoked tokens stop working, a purge needs a reason and says what it removed, a
//! compliance user gets 403 on /admin with nothing of it in the page, verification
//! runs in the background with progress, an exported file uploads and checks, and
//! over HTTPS (the records service's files) cookies are `Secure` and a client
//! certificate signs in with its mapped role.

mod records_common;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use courtline::contract::pb::{FlagCallRequest, FlagCategory, LogEventsRequest, Role};
use courtline::records::service::{ClientCertificates, OpenedService, ServiceSettings};
use courtline::records::web::tls::WebTls;
use courtline::records::web::WebSettings;
use http_body_util::{BodyExt, Full};
use hyper::Request;
use hyper_util::rt::TokioIo;
use rcgen::{BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair};
use records_common::*;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio_rustls::rustls::{self, ClientConfig, RootCertStore};
use tokio_rustls::TlsConnector;

/// A records service with its console, both on loopback, sharing one opened service.
struct Running {
    /// The console's address.
    web: SocketAddr,
    /// The gRPC endpoint.
    endpoint: String,
    stop: tokio::sync::watch::Sender<bool>,
    grpc: JoinHandle<Result<(), courtline::records::service::ServiceError>>,
    console: JoinHandle<std::io::Result<()>>,
}

impl Running {
    async fn start(settings: &ServiceSettings, tls: Option<WebTls>) -> Running {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let opened = OpenedService::open(settings).await.unwrap();
        let server = opened.server.clone();
        let grpc_listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let grpc_addr = grpc_listener.local_addr().unwrap();
        let web_listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let web = web_listener.local_addr().unwrap();
        let (stop, stopped) = tokio::sync::watch::channel(false);
        let mut grpc_stopped = stopped.clone();
        let grpc = tokio::spawn(opened.serve(grpc_listener, async move {
            let _ = grpc_stopped.changed().await;
        }));
        let mut web_stopped = stopped;
        let console = tokio::spawn(courtline::records::web::serve(
            web_listener,
            server,
            WebSettings {
                hosts: vec![web.to_string(), format!("localhost:{}", web.port())],
                session_idle: Duration::from_secs(1800),
                tls,
                masked_roles: Vec::new(),
            },
            async move {
                let _ = web_stopped.changed().await;
            },
        ));
        let scheme = if settings.tls.is_some() {
            "https"
        } else {
            "http"
        };
        Running {
            web,
            endpoint: format!("{scheme}://{grpc_addr}"),
            stop,
            grpc,
            console,
        }
    }

    async fn stop(self) {
        self.stop.send(true).unwrap();
        self.grpc.await.unwrap().unwrap();
        self.console.await.unwrap().unwrap();
    }
}

/// One answer.
struct Reply {
    status: u16,
    /// Every `Set-Cookie` as sent.
    set_cookies: Vec<String>,
    location: String,
    /// `HX-Redirect`, htmx's whole-page navigation.
    hx_redirect: String,
    body: String,
}

/// A browser as far as HTTP goes: a cookie jar, and TLS when the console has it.
struct Browser {
    web: SocketAddr,
    host: String,
    tls: Option<TlsConnector>,
    cookies: BTreeMap<String, String>,
}

impl Browser {
    fn plain(web: SocketAddr) -> Browser {
        Browser {
            web,
            host: web.to_string(),
            tls: None,
            cookies: BTreeMap::new(),
        }
    }

    /// Over TLS to `localhost`, trusting `server_ca`, presenting `client` if given.
    fn tls(web: SocketAddr, server_ca: &PathBuf, client: Option<&(PathBuf, PathBuf)>) -> Browser {
        let mut roots = RootCertStore::empty();
        for certificate in CertificateDer::pem_file_iter(server_ca).unwrap() {
            roots.add(certificate.unwrap()).unwrap();
        }
        let builder =
            ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
                .with_safe_default_protocol_versions()
                .unwrap()
                .with_root_certificates(roots);
        let config = match client {
            Some((cert, key)) => builder
                .with_client_auth_cert(
                    CertificateDer::pem_file_iter(cert)
                        .unwrap()
                        .map(Result::unwrap)
                        .collect(),
                    PrivateKeyDer::from_pem_file(key).unwrap(),
                )
                .unwrap(),
            None => builder.with_no_client_auth(),
        };
        Browser {
            web,
            host: format!("localhost:{}", web.port()),
            tls: Some(TlsConnector::from(Arc::new(config))),
            cookies: BTreeMap::new(),
        }
    }

    async fn exchange<IO>(io: IO, request: Request<Full<Bytes>>) -> hyper::Response<Bytes>
    where
        IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(io))
            .await
            .unwrap();
        tokio::spawn(connection);
        let response = sender.send_request(request).await.unwrap();
        let (parts, body) = response.into_parts();
        hyper::Response::from_parts(parts, body.collect().await.unwrap().to_bytes())
    }

    async fn send(&mut self, method: &str, path: &str, content_type: &str, body: Vec<u8>) -> Reply {
        self.send_with(method, path, &[("content-type", content_type)], body)
            .await
    }

    async fn send_with(
        &mut self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Vec<u8>,
    ) -> Reply {
        let cookie = self
            .cookies
            .iter()
            .map(|(name, value)| format!("{name}={value}"))
            .collect::<Vec<_>>()
            .join("; ");
        let mut request = Request::builder()
            .method(method)
            .uri(path)
            .header("host", &self.host)
            .header("cookie", cookie);
        for (name, value) in headers.iter().filter(|(_, value)| !value.is_empty()) {
            request = request.header(*name, *value);
        }
        let request = request.body(Full::new(Bytes::from(body))).unwrap();
        let tcp = TcpStream::connect(self.web).await.unwrap();
        let response = match &self.tls {
            None => Browser::exchange(tcp, request).await,
            Some(connector) => {
                let name = ServerName::try_from("localhost").unwrap();
                let tls = connector.connect(name, tcp).await.unwrap();
                Browser::exchange(tls, request).await
            }
        };
        let set_cookies: Vec<String> = response
            .headers()
            .get_all("set-cookie")
            .iter()
            .map(|value| value.to_str().unwrap().to_owned())
            .collect();
        for set in &set_cookies {
            let (pair, attributes) = set.split_once(';').unwrap_or((set, ""));
            let (name, value) = pair.split_once('=').unwrap();
            if attributes.contains("Max-Age=0") {
                self.cookies.remove(name);
            } else {
                self.cookies.insert(name.to_owned(), value.to_owned());
            }
        }
        let header = |name: &str| {
            response
                .headers()
                .get(name)
                .map(|value| value.to_str().unwrap().to_owned())
                .unwrap_or_default()
        };
        Reply {
            status: response.status().as_u16(),
            set_cookies,
            location: header("location"),
            hx_redirect: header("hx-redirect"),
            body: String::from_utf8(response.body().to_vec()).unwrap(),
        }
    }

    async fn get(&mut self, path: &str) -> Reply {
        self.send("GET", path, "", Vec::new()).await
    }

    async fn post(&mut self, path: &str, form: &[(&str, &str)]) -> Reply {
        let body = serde_urlencoded::to_string(form).unwrap();
        self.send(
            "POST",
            path,
            "application/x-www-form-urlencoded",
            body.into_bytes(),
        )
        .await
    }

    /// A multipart form with the CSRF token and one file, as the upload form sends it.
    async fn post_file(&mut self, path: &str, csrf: &str, name: &str, file: &[u8]) -> Reply {
        let boundary = "----courtline-test-boundary-7d9e4c1a";
        let mut body = format!(
            "--{boundary}\r\nContent-Disposition: form-data; name=\"csrf\"\r\n\r\n{csrf}\r\n\
             --{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{name}\"\r\n\
             Content-Type: text/csv\r\n\r\n"
        )
        .into_bytes();
        body.extend_from_slice(file);
        body.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
        self.send(
            "POST",
            path,
            &format!("multipart/form-data; boundary={boundary}"),
            body,
        )
        .await
    }

    /// Signs in with `token` through the sign-in form.
    async fn sign_in(&mut self, token: &str) -> Reply {
        let login = self.get("/login").await;
        let csrf = csrf(&login.body);
        self.post("/login", &[("token", token), ("csrf", &csrf)])
            .await
    }
}

/// The CSRF token of the page's forms.
fn csrf(html: &str) -> String {
    let start = html
        .find("name=\"csrf\" value=\"")
        .expect("a form with a CSRF token")
        + "name=\"csrf\" value=\"".len();
    html[start..].split('"').next().unwrap().to_owned()
}

/// The token secret on the page that issued it.
fn issued_secret(html: &str) -> String {
    let start = html.find("id=\"new-token\"").expect("the issued token");
    let value = &html[start..];
    let value = &value[value.find("value=\"").unwrap() + "value=\"".len()..];
    let secret = value.split('"').next().unwrap().to_owned();
    assert!(secret.starts_with("clt_") && secret.len() == 68, "{secret}");
    secret
}

/// The text of the element with `id` (up to its first tag end).
fn element_text<'a>(html: &'a str, id: &str) -> &'a str {
    let start = html
        .find(&format!("id=\"{id}\""))
        .unwrap_or_else(|| panic!("#{id} not in:\n{html}"));
    let rest = &html[start..];
    let rest = &rest[rest.find('>').unwrap() + 1..];
    &rest[..rest.find('<').unwrap()]
}

/// Calls 1..=4 logged, call 2 flagged (legal hold), all under the loopback rule.
async fn log_calls(endpoint: &str) {
    let mut client =
        courtline::contract::connect::connect(&courtline::contract::connect::ClientOptions {
            endpoint: endpoint.to_owned(),
            ..Default::default()
        })
        .await
        .unwrap();
    let mut events = vec![node_started()];
    events.extend(complete_calls(1..=4));
    client
        .log_events(LogEventsRequest {
            events: numbered("sb-1", 1, events),
        })
        .await
        .unwrap();
    client
        .flag_call(FlagCallRequest {
            call_id: call_id(2),
            category: FlagCategory::Intercession as i32,
            note: "请求关照".into(),
        })
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_issues_and_revokes_tokens_purges_with_a_reason_and_others_see_nothing_of_it() {
    let db = sqlite_db();
    let running = Running::start(&settings(&db), None).await;
    log_calls(&running.endpoint).await;

    // Before any token, this machine's browser is admin (loopback rule) and issues
    // the first admin token; the page shows the secret once.
    let mut loopback = Browser::plain(running.web);
    let admin_page = loopback.get("/admin").await;
    assert_eq!(admin_page.status, 200, "{}", admin_page.body);
    assert!(admin_page.body.contains("id=\"loopback-banner\""));
    let refused = loopback
        .post(
            "/admin/tokens",
            &[("name", "admin-1"), ("role", "admin"), ("csrf", "forged")],
        )
        .await;
    assert_eq!(
        refused.status, 403,
        "a POST without the session's CSRF token"
    );
    let issued = loopback
        .post(
            "/admin/tokens",
            &[
                ("name", "admin-1"),
                ("role", "admin"),
                ("csrf", &csrf(&admin_page.body)),
            ],
        )
        .await;
    assert_eq!(issued.status, 200, "{}", issued.body);
    let admin_secret = issued_secret(&issued.body);
    assert!(issued.body.contains("id=\"loopback-ended\""));
    assert!(issued.body.contains("id=\"shown-once\""));
    // The loopback rule is over: the same browser is sent to sign in.
    assert_eq!(loopback.get("/admin").await.location, "/login");

    let mut admin = Browser::plain(running.web);
    let signed_in = admin.sign_in(&admin_secret).await;
    assert_eq!(signed_in.status, 303, "{}", signed_in.body);
    let page = admin.get("/admin").await;
    assert_eq!(page.status, 200);
    assert!(page.body.contains("data-token=\"admin-1\""));
    assert!(
        !page.body.contains(&admin_secret),
        "the secret is never shown again"
    );
    // Retention: every test call is from 2023; call 2 is flagged and held.
    assert_eq!(element_text(&page.body, "retention-days"), "180");
    assert_eq!(element_text(&page.body, "purge-due"), "3");
    assert_eq!(element_text(&page.body, "held-past"), "1");
    assert!(page
        .body
        .contains(&format!("href=\"/calls/{}\"", call_id(2))));
    assert!(!page.body.contains(&format!("/calls/{}\"", call_id(1))));

    let admin_csrf = csrf(&page.body);
    let mut secrets = BTreeMap::new();
    for (name, role) in [
        ("compliance-1", "compliance"),
        ("compliance-2", "compliance"),
        ("auditor-1", "auditor"),
    ] {
        let issued = admin
            .post(
                "/admin/tokens",
                &[("name", name), ("role", role), ("csrf", &admin_csrf)],
            )
            .await;
        assert_eq!(issued.status, 200, "{}", issued.body);
        assert!(!issued.body.contains("id=\"loopback-ended\""));
        secrets.insert(name, issued_secret(&issued.body));
    }
    let page = admin.get("/admin").await;
    for secret in secrets.values() {
        assert!(!page.body.contains(secret.as_str()));
    }
    let duplicate = admin
        .post(
            "/admin/tokens",
            &[
                ("name", "auditor-1"),
                ("role", "auditor"),
                ("csrf", &admin_csrf),
            ],
        )
        .await;
    assert_eq!(duplicate.status, 409, "{}", duplicate.body);
    assert!(!duplicate.body.contains("clt_"));

    // Revoking asks first, then ends the token for good.
    let confirm = admin.get("/admin/tokens/revoke?name=compliance-2").await;
    assert_eq!(element_text(&confirm.body, "revoke-name"), "compliance-2");
    let mut compliance_2 = Browser::plain(running.web);
    assert_eq!(
        compliance_2.sign_in(&secrets["compliance-2"]).await.status,
        303
    );
    assert_eq!(compliance_2.get("/calls").await.status, 200);
    let revoked = admin
        .post(
            "/admin/tokens/revoke",
            &[("name", "compliance-2"), ("csrf", &admin_csrf)],
        )
        .await;
    assert_eq!((revoked.status, revoked.location.as_str()), (303, "/admin"));
    let page = admin.get("/admin").await;
    let row = &page.body[page.body.find("data-token=\"compliance-2\"").unwrap()..];
    let revoked_at = &row[row.find("class=\"revoked\">").unwrap() + 16..];
    assert!(!revoked_at.starts_with('<'), "a revocation time is shown");
    assert_eq!(
        compliance_2.get("/calls").await.location,
        "/login",
        "the revoked token's session ended"
    );
    assert_eq!(
        compliance_2.sign_in(&secrets["compliance-2"]).await.status,
        401
    );

    // A compliance user: 403 on everything of administration, with nothing of it shown.
    let mut compliance = Browser::plain(running.web);
    assert_eq!(
        compliance.sign_in(&secrets["compliance-1"]).await.status,
        303
    );
    let compliance_csrf = csrf(&compliance.get("/calls").await.body);
    for reply in [
        compliance.get("/admin").await,
        compliance.get("/admin/tokens/revoke?name=admin-1").await,
        compliance
            .post(
                "/admin/tokens",
                &[
                    ("name", "sneaky"),
                    ("role", "admin"),
                    ("csrf", &compliance_csrf),
                ],
            )
            .await,
        compliance
            .post(
                "/admin/purge",
                &[("reason", "x"), ("csrf", &compliance_csrf)],
            )
            .await,
    ] {
        assert_eq!(reply.status, 403, "{}", reply.body);
        for leak in [
            "admin-1",
            "auditor-1",
            "token-list",
            "purge-due",
            "held-calls",
            "clt_",
            call_id(2).as_str(),
        ] {
            assert!(!reply.body.contains(leak), "{leak} leaked:\n{}", reply.body);
        }
    }
    // The compliance user exports the calls (signed CSV) before the purge.
    let export = compliance
        .post(
            "/calls/export",
            &[
                ("csrf", compliance_csrf.as_str()),
                ("format", "csv"),
                ("reason", "年度审查"),
            ],
        )
        .await;
    assert_eq!(export.status, 200, "{}", export.body);
    assert!(export.body.contains(&call_id(1)));

    // A purge needs a reason, and says what it removed.
    let no_reason = admin
        .post("/admin/purge", &[("reason", "  "), ("csrf", &admin_csrf)])
        .await;
    assert_eq!(no_reason.status, 400);
    assert_eq!(
        element_text(&admin.get("/admin").await.body, "purge-due"),
        "3",
        "nothing purged without a reason"
    );
    let purged = admin
        .post(
            "/admin/purge",
            &[("reason", "年度保存期限清理"), ("csrf", &admin_csrf)],
        )
        .await;
    assert_eq!(purged.status, 200, "{}", purged.body);
    assert_eq!(element_text(&purged.body, "purged-calls"), "3");
    assert_eq!(element_text(&purged.body, "purged-held"), "1");
    assert!(element_text(&purged.body, "purged-seq").starts_with('#'));
    let page = admin.get("/admin").await;
    assert_eq!(element_text(&page.body, "purge-due"), "0");
    assert!(
        page.body
            .contains(&format!("href=\"/calls/{}\"", call_id(2))),
        "still held"
    );

    // The auditor finds each admin action in the access log, by operation and reason.
    let mut auditor = Browser::plain(running.web);
    assert_eq!(auditor.sign_in(&secrets["auditor-1"]).await.status, 303);
    let log = auditor
        .get("/access?operation=Purge&reason=%E4%BF%9D%E5%AD%98%E6%9C%9F%E9%99%90")
        .await;
    assert_eq!(log.status, 200, "{}", log.body);
    assert!(log.body.contains("年度保存期限清理"));
    // The page views' dry runs stated no reason: only the purge itself is found.
    assert_eq!(
        log.body.matches("<td>Purge</td>").count(),
        1,
        "{}",
        log.body
    );
    let tokens = auditor
        .get("/access?operation=AddToken&actor=admin-1")
        .await;
    assert_eq!(
        tokens.body.matches("<td>AddToken</td>").count(),
        3,
        "{}",
        tokens.body
    );
    assert!(
        !tokens.body.contains("clt_"),
        "secrets are not in the access log"
    );
    let revokes = auditor.get("/access?operation=RevokeToken").await;
    assert!(revokes.body.contains("compliance-2"));
    let by_call = auditor
        .get(&format!("/access?call_id={}", call_id(2)))
        .await;
    assert!(
        by_call.body.contains("<td>FlagCall</td>"),
        "{}",
        by_call.body
    );
    assert!(!by_call.body.contains("<td>Purge</td>"));

    // Verification runs in the background; the fragment shows progress until the findings.
    let integrity = auditor.get("/integrity").await;
    assert!(
        !integrity.body.contains("id=\"verify-status\""),
        "none ran yet"
    );
    let integrity_csrf = csrf(&integrity.body);
    let started = auditor
        .post("/integrity/verify", &[("csrf", &integrity_csrf)])
        .await;
    assert_eq!(
        (started.status, started.location.as_str()),
        (303, "/integrity")
    );
    let mut polls = 0;
    let finished = loop {
        let fragment = auditor.get("/integrity/progress").await;
        assert_eq!(fragment.status, 200);
        assert!(fragment.body.contains("id=\"verify-status\""));
        if !fragment.body.contains("hx-trigger=\"every 1s\"") {
            break fragment.body;
        }
        assert!(fragment.body.contains("id=\"verify-checked\""));
        polls += 1;
        assert!(polls < 600, "verification never finished");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(finished.contains("id=\"intact\""), "{finished}");
    assert!(finished.contains("auditor-1"));
    // A poll after the session is gone sends the whole page to the sign-in form
    // rather than putting that form inside the fragment.
    let mut signed_out = Browser::plain(running.web);
    let poll = signed_out
        .send_with(
            "GET",
            "/integrity/progress",
            &[("hx-request", "true")],
            Vec::new(),
        )
        .await;
    assert_eq!((poll.status, poll.hx_redirect.as_str()), (200, "/login"));
    assert!(!poll.body.contains("id=\"token\""));
    assert_eq!(
        signed_out.get("/integrity/progress").await.location,
        "/login"
    );

    // The exported file checks out; a changed one does not.
    let upload = auditor
        .post_file(
            "/integrity/export",
            &integrity_csrf,
            "calls.csv",
            export.body.as_bytes(),
        )
        .await;
    assert_eq!(upload.status, 200, "{}", upload.body);
    assert!(
        upload.body.contains("id=\"export-intact\""),
        "{}",
        upload.body
    );
    assert_eq!(element_text(&upload.body, "export-rows"), "4");
    assert_eq!(element_text(&upload.body, "export-by"), "compliance-1");
    let tampered = export.body.replacen("13900000001", "13900000009", 1);
    let upload = auditor
        .post_file(
            "/integrity/export",
            &integrity_csrf,
            "calls.csv",
            tampered.as_bytes(),
        )
        .await;
    assert_eq!(upload.status, 200);
    assert!(
        upload.body.contains("id=\"export-problems\""),
        "{}",
        upload.body
    );
    assert!(!upload.body.contains("id=\"export-intact\""));
    let forged = auditor
        .post_file(
            "/integrity/export",
            "forged",
            "calls.csv",
            export.body.as_bytes(),
        )
        .await;
    assert_eq!(forged.status, 403);
    let checks = auditor.get("/access?operation=VerifyExport").await;
    assert_eq!(checks.body.matches("<td>VerifyExport</td>").count(), 2);

    running.stop().await;
}

/// A certificate authority made for the test, and certificates it signs.
struct Authority {
    certificate: rcgen::Certificate,
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

    /// A client certificate with this common name, written to `dir`.
    fn client(&self, dir: &std::path::Path, common_name: &str) -> (PathBuf, PathBuf) {
        let mut params = CertificateParams::new(Vec::new()).unwrap();
        params
            .distinguished_name
            .push(DnType::CommonName, common_name);
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        let key = KeyPair::generate().unwrap();
        let certificate = params
            .signed_by(&key, &self.certificate, &self.key)
            .unwrap();
        let file = |ext: &str| dir.join(format!("{}.{ext}", common_name.replace(' ', "_")));
        std::fs::write(file("crt"), certificate.pem()).unwrap();
        std::fs::write(file("key"), key.serialize_pem()).unwrap();
        (file("crt"), file("key"))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_https_cookies_are_secure_and_a_client_certificate_signs_in_with_its_role() {
    let db = sqlite_db();
    let dir = db.dir.path().to_path_buf();
    let server = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    let (server_cert, server_key) = (dir.join("records.crt"), dir.join("records.key"));
    std::fs::write(&server_cert, server.cert.pem()).unwrap();
    std::fs::write(&server_key, server.key_pair.serialize_pem()).unwrap();
    let clients = Authority::new("courtline console test client CA");
    let clients_ca = dir.join("clients-ca.crt");
    std::fs::write(&clients_ca, clients.certificate.pem()).unwrap();
    let auditor = clients.client(&dir, "审计室 李明");
    let switchboard = clients.client(&dir, "sb-1");
    let stranger = clients.client(&dir, "stranger");
    let forged = Authority::new("someone else's CA").client(&dir, "审计室 李明 forged");

    let mut settings = settings(&db);
    settings.tls = Some((server_cert.clone(), server_key.clone()));
    settings.client_certificates = Some(ClientCertificates {
        ca_file: clients_ca.clone(),
        roles: [
            ("审计室 李明".to_owned(), Role::Auditor),
            ("sb-1".to_owned(), Role::Switchboard),
        ]
        .into_iter()
        .collect(),
    });
    let running = Running::start(
        &settings,
        Some(WebTls {
            cert_file: server_cert.clone(),
            key_file: server_key,
            client_ca_file: Some(clients_ca),
        }),
    )
    .await;

    // No certificate: the token form, and every cookie is Secure.
    let mut browser = Browser::tls(running.web, &server_cert, None);
    let login = browser.get("/login").await;
    assert_eq!(login.status, 200, "{}", login.body);
    assert!(!login.set_cookies.is_empty());
    assert!(
        login
            .set_cookies
            .iter()
            .all(|set| set.ends_with("; Secure")),
        "{:?}",
        login.set_cookies
    );
    assert!(!login.body.contains("sign-in-certificate"));
    // Client certificate roles end the loopback rule: nothing without signing in.
    assert_eq!(browser.get("/admin").await.location, "/login");
    let refused = browser
        .post("/login/certificate", &[("csrf", &csrf(&login.body))])
        .await;
    assert_eq!(refused.status, 401);

    // The auditor's certificate: offered on the sign-in page, and it signs in.
    let mut auditor_browser = Browser::tls(running.web, &server_cert, Some(&auditor));
    let login = auditor_browser.get("/login").await;
    assert_eq!(
        element_text(&login.body, "certificate-name"),
        "cert:审计室 李明"
    );
    let forged_csrf = auditor_browser
        .post("/login/certificate", &[("csrf", "forged")])
        .await;
    assert_eq!(forged_csrf.status, 403);
    let login = auditor_browser.get("/login").await;
    let signed_in = auditor_browser
        .post("/login/certificate", &[("csrf", &csrf(&login.body))])
        .await;
    assert_eq!(
        (signed_in.status, signed_in.location.as_str()),
        (303, "/access"),
        "{}",
        signed_in.body
    );
    assert!(signed_in
        .set_cookies
        .iter()
        .any(|set| set.starts_with("courtline_session=") && set.ends_with("; Secure")));
    let access = auditor_browser.get("/access").await;
    assert_eq!(access.status, 200, "{}", access.body);
    assert!(access.body.contains("cert:审计室 李明 (auditor)"));
    assert_eq!(auditor_browser.get("/admin").await.status, 403);
    // Its own view is on the chain under the certificate's name.
    let logged = auditor_browser.get("/access?operation=ListAccess").await;
    assert!(
        logged.body.contains("<td>cert:审计室 李明</td>"),
        "{}",
        logged.body
    );

    // A switchboard certificate has no console role; a certificate without a role
    // is not offered; one from another CA fails the handshake.
    for client in [&switchboard, &stranger] {
        let mut browser = Browser::tls(running.web, &server_cert, Some(client));
        let login = browser.get("/login").await;
        assert!(!login.body.contains("sign-in-certificate"), "{client:?}");
        let refused = browser
            .post("/login/certificate", &[("csrf", &csrf(&login.body))])
            .await;
        assert_eq!(refused.status, 401, "{client:?}");
    }
    let tcp = TcpStream::connect(running.web).await.unwrap();
    let forged_browser = Browser::tls(running.web, &server_cert, Some(&forged));
    let connector = forged_browser.tls.clone().unwrap();
    let handshake = async {
        let mut tls = connector
            .connect(ServerName::try_from("localhost").unwrap(), tcp)
            .await?;
        // TLS 1.3: the server's refusal arrives with the first read.
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        tls.write_all(b"GET /login HTTP/1.1\r\nhost: localhost\r\n\r\n")
            .await?;
        let mut buffer = [0; 64];
        tls.read(&mut buffer).await
    };
    assert!(
        !matches!(handshake.await, Ok(read) if read > 0),
        "a certificate from another CA is refused"
    );
    // Plain HTTP to the HTTPS port gets no page.
    let tcp = TcpStream::connect(running.web).await.unwrap();
    let request = Request::builder()
        .uri("/login")
        .header("host", format!("localhost:{}", running.web.port()))
        .body(Full::new(Bytes::new()))
        .unwrap();
    let plain_reply = async {
        let (mut sender, connection) =
            hyper::client::conn::http1::handshake(TokioIo::new(tcp)).await?;
        tokio::spawn(connection);
        sender.send_request(request).await
    };
    assert!(plain_reply.await.is_err(), "plain HTTP is not served");

    running.stop().await;
}
