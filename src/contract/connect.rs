//! The gRPC connection to the records service, as the switchboard's sender and
//! the CLI's queries make it: endpoint, TLS, bearer token and stated reason.

use std::error::Error as StdError;
use std::path::PathBuf;
use std::time::Duration;

use tonic::metadata::{AsciiMetadataValue, BinaryMetadataValue};
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};

use super::pb::records_service_client::RecordsServiceClient;
use super::{REASON_METADATA, USER_METADATA};

/// How long establishing a TCP/HTTP2 connection may take before it counts as a failure.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Why the CLI could not get a records-service client.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The endpoint is not a valid URI.
    #[error("invalid records service endpoint {endpoint:?}: {detail}")]
    InvalidEndpoint {
        /// The endpoint as configured.
        endpoint: String,
        /// What is wrong with it.
        detail: String,
    },
    /// Nothing answered at the endpoint.
    #[error(
        "cannot reach the records service at {endpoint}: {detail} — \
         is `courtline serve` or `courtline records serve` running?"
    )]
    Unreachable {
        /// The endpoint we dialled.
        endpoint: String,
        /// The transport error with its causes.
        detail: String,
    },
    /// A token or CA file could not be read.
    #[error("{what} {path}: {source}")]
    File {
        /// Which setting.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// The failure.
        source: std::io::Error,
    },
    /// A token or reason cannot be sent as gRPC metadata.
    #[error("{0}")]
    BadMetadata(String),
}

/// How to reach and authenticate to the records service.
#[derive(Debug, Clone, Default)]
pub struct ClientOptions {
    /// `http://host:port` or `https://host:port` (scheme optional: http).
    pub endpoint: String,
    /// Bearer token, if any.
    pub token: Option<String>,
    /// CA certificate (PEM) that signed the service's certificate, for https.
    pub tls_ca_file: Option<PathBuf>,
    /// Client certificate and its private key (PEM files) to present over https (mTLS).
    pub client_certificate: Option<(PathBuf, PathBuf)>,
    /// Reason stated for the access log.
    pub reason: Option<String>,
    /// Who is asking, for the access log when no token or certificate says so (the
    /// service trusts it as a label only under its no-token loopback rule).
    pub user: Option<String>,
}

impl ClientOptions {
    /// Plain options for `endpoint` with no token.
    pub fn new(endpoint: impl Into<String>) -> ClientOptions {
        ClientOptions {
            endpoint: endpoint.into(),
            ..ClientOptions::default()
        }
    }

    /// Checks the endpoint and TLS files without connecting, so a sender that
    /// retries forever can say at start-up that it never will get through.
    pub fn check(&self) -> Result<(), ClientError> {
        endpoint_config(self).map(|_| ())
    }
}

/// Reads a token file (whitespace trimmed).
pub fn read_token_file(path: &std::path::Path) -> Result<String, ClientError> {
    std::fs::read_to_string(path)
        .map(|text| text.trim().to_owned())
        .map_err(|source| ClientError::File {
            what: "token file",
            path: path.to_path_buf(),
            source,
        })
}

/// Adds the bearer token, stated reason and user name to every request.
#[derive(Debug, Clone, Default)]
pub struct Credentials {
    /// `Bearer <token>`.
    authorization: Option<AsciiMetadataValue>,
    /// UTF-8 reason.
    reason: Option<BinaryMetadataValue>,
    /// UTF-8 user name.
    user: Option<BinaryMetadataValue>,
}

impl tonic::service::Interceptor for Credentials {
    fn call(
        &mut self,
        mut request: tonic::Request<()>,
    ) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(value) = &self.authorization {
            request
                .metadata_mut()
                .insert("authorization", value.clone());
        }
        if let Some(value) = &self.reason {
            request
                .metadata_mut()
                .insert_bin(REASON_METADATA, value.clone());
        }
        if let Some(value) = &self.user {
            request
                .metadata_mut()
                .insert_bin(USER_METADATA, value.clone());
        }
        Ok(request)
    }
}

/// A records-service client that authenticates every request.
pub type RecordsClient = RecordsServiceClient<InterceptedService<Channel, Credentials>>;

/// Adds `http://` when the endpoint has no scheme, so `127.0.0.1:50051` works as typed.
fn normalize_endpoint(endpoint: &str) -> String {
    if endpoint.contains("://") {
        endpoint.to_owned()
    } else {
        format!("http://{endpoint}")
    }
}

/// `error: cause: cause ...`, because tonic's transport errors hide the useful part in sources.
pub fn error_chain(error: &dyn StdError) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

fn endpoint_config(options: &ClientOptions) -> Result<Endpoint, ClientError> {
    let invalid = |detail: String| ClientError::InvalidEndpoint {
        endpoint: options.endpoint.clone(),
        detail,
    };
    let normalized = normalize_endpoint(&options.endpoint);
    let mut endpoint = Endpoint::from_shared(normalized.clone())
        .map_err(|error| invalid(error_chain(&error)))?
        .connect_timeout(CONNECT_TIMEOUT);
    if normalized.starts_with("https://") {
        let Some(ca_file) = &options.tls_ca_file else {
            return Err(invalid(
                "https needs the CA certificate that signed the service's certificate \
                 ([records] tls_ca_file, or --tls-ca-file)"
                    .into(),
            ));
        };
        let mut tls = ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(read_pem("TLS CA file", ca_file)?));
        if let Some((certificate, key)) = &options.client_certificate {
            tls = tls.identity(Identity::from_pem(
                read_pem("client certificate", certificate)?,
                read_pem("client certificate key", key)?,
            ));
        }
        endpoint = endpoint
            .tls_config(tls)
            .map_err(|error| invalid(error_chain(&error)))?;
    } else if options.client_certificate.is_some() {
        return Err(invalid(
            "a client certificate is presented in TLS: the endpoint must be https://".into(),
        ));
    }
    Ok(endpoint)
}

/// Reads a PEM file named `what` in errors.
fn read_pem(what: &'static str, path: &std::path::Path) -> Result<Vec<u8>, ClientError> {
    std::fs::read(path).map_err(|source| ClientError::File {
        what,
        path: path.to_path_buf(),
        source,
    })
}

fn credentials(options: &ClientOptions) -> Result<Credentials, ClientError> {
    let authorization = options
        .token
        .as_ref()
        .filter(|token| !token.is_empty())
        .map(|token| {
            AsciiMetadataValue::try_from(format!("Bearer {}", token.trim())).map_err(|_| {
                ClientError::BadMetadata(
                    "the token contains characters a header cannot carry".into(),
                )
            })
        })
        .transpose()?;
    let binary = |text: &Option<String>| {
        text.as_ref()
            .filter(|text| !text.is_empty())
            .map(|text| BinaryMetadataValue::from_bytes(text.as_bytes()))
    };
    Ok(Credentials {
        authorization,
        reason: binary(&options.reason),
        user: binary(&options.user),
    })
}

/// Connects to the records service for queries; fails fast with a message that says
/// what to start.
pub async fn connect(options: &ClientOptions) -> Result<RecordsClient, ClientError> {
    let credentials = credentials(options)?;
    let channel =
        endpoint_config(options)?
            .connect()
            .await
            .map_err(|error| ClientError::Unreachable {
                endpoint: options.endpoint.clone(),
                detail: error_chain(&error),
            })?;
    Ok(RecordsServiceClient::with_interceptor(channel, credentials))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_without_scheme_get_http() {
        assert_eq!(
            normalize_endpoint("127.0.0.1:50051"),
            "http://127.0.0.1:50051"
        );
        assert_eq!(
            normalize_endpoint("https://records:443"),
            "https://records:443"
        );
        assert!(endpoint_config(&ClientOptions::new("http://[::1]:50051")).is_ok());
        assert!(matches!(
            endpoint_config(&ClientOptions::new("http://bad host")),
            Err(ClientError::InvalidEndpoint { .. })
        ));
        let https = endpoint_config(&ClientOptions::new("https://records:443")).unwrap_err();
        assert!(https.to_string().contains("tls_ca_file"), "{https}");
        let plain_with_certificate = endpoint_config(&ClientOptions {
            client_certificate: Some(("c.pem".into(), "k.pem".into())),
            ..ClientOptions::new("http://records:50051")
        })
        .unwrap_err();
        assert!(
            plain_with_certificate.to_string().contains("https://"),
            "{plain_with_certificate}"
        );
    }

    #[tokio::test]
    async fn connect_failure_says_what_to_start() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let address = listener.local_addr().unwrap();
        drop(listener);
        let error = connect(&ClientOptions::new(address.to_string()))
            .await
            .unwrap_err();
        let text = error.to_string();
        assert!(text.contains(&address.to_string()), "{text}");
        assert!(text.contains("courtline records serve"), "{text}");
    }
}
