//! The console over HTTPS, with the records service's own certificate and key (and
//! its client CA when client certificates are configured, so a browser may sign in
//! with one). The handshake is rustls with the ring provider, as for gRPC; each
//! connection is served by hyper with the peer address and the verified client
//! certificate as request extensions.

use std::future::Future;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ConnectInfo;
use axum::{Extension, Router};
use hyper_util::rt::TokioIo;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::rustls::server::WebPkiClientVerifier;
use tokio_rustls::rustls::{self, RootCertStore, ServerConfig};
use tokio_rustls::TlsAcceptor;
use tracing::{debug, warn};

/// How long a client may take over the TLS handshake before it is dropped.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// The files of the console's TLS: the records service's (`[records.service]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebTls {
    /// PEM certificate chain.
    pub cert_file: PathBuf,
    /// PEM private key.
    pub key_file: PathBuf,
    /// PEM CA of accepted client certificates (mTLS); `None`: none are asked for.
    pub client_ca_file: Option<PathBuf>,
}

/// Why the console's TLS could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A PEM file could not be read or holds nothing usable.
    #[error("console TLS file {path}: {problem}")]
    File {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        problem: String,
    },
    /// rustls refused the certificate, key or CA.
    #[error("console TLS: {0}")]
    Rustls(#[from] rustls::Error),
    /// The client CA cannot verify certificates.
    #[error("console TLS client CA: {0}")]
    ClientCa(#[from] rustls::server::VerifierBuilderError),
}

/// The client certificate (DER) a browser presented and the handshake verified
/// against the client CA; a request extension on connections that had one.
#[derive(Debug, Clone)]
pub struct ClientCertificate(pub Arc<Vec<u8>>);

/// Every certificate in a PEM file.
fn certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let problem = |problem: String| TlsError::File {
        path: path.to_path_buf(),
        problem,
    };
    let certificates = CertificateDer::pem_file_iter(path)
        .map_err(|error| problem(error.to_string()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|error| problem(error.to_string()))?;
    if certificates.is_empty() {
        return Err(problem("no certificate in it".into()));
    }
    Ok(certificates)
}

/// The rustls configuration of `tls`: client certificates optional (token users
/// need none), but one that is presented must chain to the client CA.
pub fn server_config(tls: &WebTls) -> Result<ServerConfig, TlsError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let key = PrivateKeyDer::from_pem_file(&tls.key_file).map_err(|error| TlsError::File {
        path: tls.key_file.clone(),
        problem: error.to_string(),
    })?;
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()?;
    let builder = match &tls.client_ca_file {
        None => builder.with_no_client_auth(),
        Some(ca_file) => {
            let mut roots = RootCertStore::empty();
            for certificate in certificates(ca_file)? {
                roots.add(certificate)?;
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .allow_unauthenticated()
                .build()?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let mut config = builder.with_single_cert(certificates(&tls.cert_file)?, key)?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

/// Serves `app` over TLS on `listener` until `shutdown` completes, then lets the
/// requests in flight finish.
pub(super) async fn serve(
    listener: TcpListener,
    app: Router,
    config: ServerConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> io::Result<()> {
    let acceptor = TlsAcceptor::from(Arc::new(config));
    let graceful = GracefulShutdown::new();
    tokio::pin!(shutdown);
    loop {
        let (tcp, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    // Out of descriptors and the like: wait a moment rather than spin.
                    warn!(%error, "web console cannot accept a connection");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        // Best effort: a socket that refuses it still works, only slower.
        let _ = tcp.set_nodelay(true);
        let acceptor = acceptor.clone();
        let app = app.clone();
        let watcher = graceful.watcher();
        tokio::spawn(async move {
            let stream = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                Ok(Ok(stream)) => stream,
                Ok(Err(error)) => {
                    debug!(%peer, %error, "web console TLS handshake failed");
                    return;
                }
                Err(_) => {
                    debug!(%peer, "web console TLS handshake timed out");
                    return;
                }
            };
            let mut app = app.layer(Extension(ConnectInfo(peer)));
            if let Some(presented) = stream
                .get_ref()
                .1
                .peer_certificates()
                .and_then(|chain| chain.first())
            {
                app = app.layer(Extension(ClientCertificate(Arc::new(presented.to_vec()))));
            }
            let connection = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), TowerToHyperService::new(app));
            if let Err(error) = watcher.watch(connection).await {
                debug!(%peer, %error, "web console connection ended with an error");
            }
        });
    }
    graceful.shutdown().await;
    Ok(())
}
