//! Who may do what: bearer tokens mapped to roles.
//!
//! | role | may |
//! | --- | --- |
//! | switchboard | LogEvents |
//! | compliance | ListCalls, GetCall, ExportCalls, FlagCall |
//! | auditor | Verify, ListGaps, ListAccess |
//! | admin | AddToken, ListTokens, RevokeToken, Purge |
//! | operator | OpenReport, UpdateReport, SubmitReport, GetReport, ListReports on its own reports; GetCall on the calls they are about |
//!
//! Reports are shared further: compliance opens, reads and reviews all of them
//! (and reads their calls as always), auditors read them
//! ([`super::reports::workflow`] decides the rest).
//!
//! Tokens are random 256-bit secrets; the store keeps only their SHA-256 (a slow
//! password hash buys nothing for secrets this long). A client sends
//! `authorization: Bearer <token>`.
//!
//! **Client certificates (mTLS)** are the alternative: with
//! `[records.service] tls_client_ca_file`, a client may present a certificate signed
//! by that CA in the TLS handshake (one signed by anyone else fails the handshake),
//! and `client_certificates` maps one of its names — a DNS, URI or e-mail subject
//! alternative name, or the subject common name — to a role. The access log names
//! such a client `cert:<name>`. A request with a bearer token is judged by the token;
//! a certificate with no mapped name gets nothing.
//!
//! **Loopback until the first token.** A fresh records service has no tokens, and
//! then accepts any client connecting from a loopback address with every role — so
//! `courtline serve` followed by `courtline calls list` on the same machine works
//! with no setup, exactly as before tokens existed. Such a client is logged as
//! `loopback:<name>`, the name it states in [`USER_METADATA`] (the CLI sends `--as`,
//! `COURTLINE_USER` or the OS user), so every flag and export is someone's; the name
//! is a label, trusted only under this rule (a token's or certificate's own name
//! wins). The first `courtline records token add` (itself allowed by this rule) ends
//! it for good: from then on every request needs a valid token, revoked ones
//! included in the count, so revoking every token does not reopen the service. That
//! first token must therefore be an admin token — with any other, no one could ever
//! issue a token again (recovery: the offline `records token add --database`).
//! Configuring client certificate roles ends the rule too. The embedded switchboard
//! never depends on this: it is given an in-memory switchboard token.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;

use sha2::{Digest, Sha256};
use tokio::sync::RwLock;
use tonic::{Request, Status};
use x509_cert::der::oid::db::rfc4519::COMMON_NAME;
use x509_cert::der::oid::AssociatedOid;
use x509_cert::der::Decode;
use x509_cert::ext::pkix::name::GeneralName;
use x509_cert::ext::pkix::SubjectAltName;

use super::store::Store;
use crate::contract::pb::Role;
use crate::contract::{REASON_METADATA, USER_METADATA};

/// Name that requests accepted under the loopback rule are logged under (followed by
/// `:` and the stated user name, when one is stated).
pub const LOOPBACK_ACTOR: &str = "loopback";
/// Longest stated user name kept, in characters.
const MAX_USER_CHARS: usize = 64;
/// Prefix of every token secret, so a leaked one is recognisable in logs and scanners.
const SECRET_PREFIX: &str = "clt_";
/// Prefix of the name a client certificate is logged under, so the access log tells
/// certificate identities from token names.
pub const CERTIFICATE_ACTOR_PREFIX: &str = "cert:";

/// The role of each client certificate identity.
pub type CertificateRoles = HashMap<String, Role>;

/// The names a client certificate (DER) goes by, in order: its DNS, URI and e-mail
/// subject alternative names, then its subject common names. Empty if it cannot be
/// parsed (rustls has verified the chain by then; such a certificate has no usable name).
pub fn certificate_identities(der: &[u8]) -> Vec<String> {
    let Ok(certificate) = x509_cert::Certificate::from_der(der) else {
        return Vec::new();
    };
    let tbs = &certificate.tbs_certificate;
    let mut names: Vec<String> = tbs
        .extensions
        .iter()
        .flatten()
        .filter(|extension| extension.extn_id == SubjectAltName::OID)
        .filter_map(|extension| SubjectAltName::from_der(extension.extn_value.as_bytes()).ok())
        .flat_map(|alternative| alternative.0)
        .filter_map(|name| match name {
            GeneralName::DnsName(name)
            | GeneralName::UniformResourceIdentifier(name)
            | GeneralName::Rfc822Name(name) => Some(name.to_string()),
            _ => None,
        })
        .collect();
    names.extend(
        tbs.subject
            .0
            .iter()
            .flat_map(|relative| relative.0.iter())
            .filter(|attribute| attribute.oid == COMMON_NAME)
            .filter_map(|attribute| directory_string(&attribute.value)),
    );
    names
}

/// The text of a name attribute (UTF8String, PrintableString or IA5String).
fn directory_string(value: &x509_cert::der::Any) -> Option<String> {
    use x509_cert::der::asn1::{Ia5StringRef, PrintableStringRef, Utf8StringRef};
    value
        .decode_as::<Utf8StringRef<'_>>()
        .map(|text| text.to_string())
        .or_else(|_| {
            value
                .decode_as::<PrintableStringRef<'_>>()
                .map(|text| text.to_string())
        })
        .or_else(|_| {
            value
                .decode_as::<Ia5StringRef<'_>>()
                .map(|text| text.to_string())
        })
        .ok()
}

/// A fresh token secret.
pub fn new_secret() -> String {
    format!("{SECRET_PREFIX}{}", hex::encode(rand::random::<[u8; 32]>()))
}

/// What the store keeps of a secret.
pub fn secret_hash(secret: &str) -> [u8; 32] {
    Sha256::digest(secret.trim().as_bytes()).into()
}

/// The role's name as typed on the command line and shown in listings.
pub fn role_name(role: Role) -> &'static str {
    match role {
        Role::Unspecified => "none",
        Role::Switchboard => "switchboard",
        Role::Compliance => "compliance",
        Role::Auditor => "auditor",
        Role::Admin => "admin",
        Role::Operator => "operator",
    }
}

/// Parses a role name.
pub fn parse_role(text: &str) -> Option<Role> {
    [
        Role::Switchboard,
        Role::Compliance,
        Role::Auditor,
        Role::Admin,
        Role::Operator,
    ]
    .into_iter()
    .find(|role| role_name(*role) == text.trim().to_ascii_lowercase())
}

/// The name a request accepted under the loopback rule is logged under:
/// `loopback:<stated name>`, or `loopback` when no usable name was stated. Control
/// characters are dropped and the name is cut to [`MAX_USER_CHARS`].
pub fn loopback_actor(stated: Option<&str>) -> String {
    let name: String = stated
        .unwrap_or_default()
        .trim()
        .chars()
        .filter(|c| !c.is_control())
        .take(MAX_USER_CHARS)
        .collect();
    if name.is_empty() {
        LOOPBACK_ACTOR.to_owned()
    } else {
        format!("{LOOPBACK_ACTOR}:{name}")
    }
}

/// Whether `caller` may issue a token with `role`: under the loopback rule (no token
/// yet) only an admin token, since the first token ends the rule and without an
/// admin token no one could issue another.
pub fn may_issue_token(caller: &Caller, role: Role) -> Result<(), Status> {
    if caller.under_loopback_rule && role != Role::Admin {
        return Err(Status::failed_precondition(format!(
            "the first token must be an admin token: it ends the no-token loopback access, \
             and without an admin token no one could issue another. Issue one first \
             (courtline records token add admin-1 --role admin), then this {} token with it",
            role_name(role)
        )));
    }
    Ok(())
}

/// The authenticated client of one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// Token name, `cert:` and the certificate identity, or [`LOOPBACK_ACTOR`] and the
    /// stated user name.
    pub name: String,
    /// The role the request was allowed under.
    pub role: Role,
    /// Client address.
    pub peer: String,
    /// Stated reason, if any.
    pub reason: String,
    /// Let in by the loopback rule (no token issued yet), not by a token or certificate.
    pub under_loopback_rule: bool,
}

/// A valid token as the authenticator caches it.
#[derive(Debug, Clone)]
struct KnownToken {
    /// Token name.
    name: String,
    /// Its role.
    role: Role,
}

/// What the authenticator knows about tokens.
#[derive(Debug, Default)]
struct TokenCache {
    /// Valid tokens by secret hash.
    valid: HashMap<[u8; 32], KnownToken>,
    /// Whether any token was ever issued (ends the loopback rule).
    any_issued: bool,
    /// Whether the cache reflects the store.
    loaded: bool,
}

/// Checks requests against the token table (cached; reloaded after token changes).
#[derive(Debug, Clone)]
pub struct Authenticator {
    /// Where tokens are stored.
    store: Arc<dyn Store>,
    /// Tokens that exist only in this process (the embedded switchboard's).
    builtin: Arc<HashMap<[u8; 32], KnownToken>>,
    /// The cached token table.
    cache: Arc<RwLock<TokenCache>>,
    /// Roles of client certificate identities (mTLS).
    certificate_roles: Arc<CertificateRoles>,
}

impl Authenticator {
    /// Authenticates against `store`'s tokens.
    pub fn new(store: Arc<dyn Store>) -> Authenticator {
        Authenticator {
            store,
            builtin: Arc::new(HashMap::new()),
            cache: Arc::new(RwLock::new(TokenCache::default())),
            certificate_roles: Arc::new(CertificateRoles::new()),
        }
    }

    /// Accepts client certificates by identity, with these roles.
    pub fn with_certificate_roles(mut self, roles: CertificateRoles) -> Authenticator {
        self.certificate_roles = Arc::new(roles);
        self
    }

    /// The client certificate's actor name (`cert:` and its mapped identity) and role;
    /// `None` when the request came without one.
    fn certificate_role<T>(&self, request: &Request<T>) -> Option<Result<(String, Role), Status>> {
        let certificates = request.peer_certs()?;
        let presented = certificates.first()?;
        Some(self.certificate_actor(presented.as_ref()))
    }

    /// The actor name (`cert:` and the first of its names that has a role) and role
    /// of a client certificate (DER) the TLS handshake verified: how gRPC requests and
    /// the web console's certificate sign-in alike map a certificate.
    pub fn certificate_actor(&self, der: &[u8]) -> Result<(String, Role), Status> {
        let names = certificate_identities(der);
        names
            .iter()
            .find_map(|name| {
                let role = *self.certificate_roles.get(name)?;
                Some((format!("{CERTIFICATE_ACTOR_PREFIX}{name}"), role))
            })
            .ok_or_else(|| {
                Status::unauthenticated(format!(
                    "client certificate {names:?} has no role ([records.service] client_certificates)"
                ))
            })
    }

    /// Adds an in-memory switchboard token (for the embedded switchboard); returns its secret.
    pub fn with_builtin_switchboard(mut self, name: &str) -> (Authenticator, String) {
        let secret = new_secret();
        let mut builtin = (*self.builtin).clone();
        builtin.insert(
            secret_hash(&secret),
            KnownToken {
                name: name.to_owned(),
                role: Role::Switchboard,
            },
        );
        self.builtin = Arc::new(builtin);
        (self, secret)
    }

    /// Forgets the cached token table (call after adding or revoking a token).
    pub async fn invalidate(&self) {
        self.cache.write().await.loaded = false;
    }

    async fn lookup(&self, hash: &[u8; 32]) -> Result<(Option<KnownToken>, bool), Status> {
        if let Some(token) = self.builtin.get(hash) {
            return Ok((Some(token.clone()), true));
        }
        {
            let cache = self.cache.read().await;
            if cache.loaded {
                return Ok((cache.valid.get(hash).cloned(), cache.any_issued));
            }
        }
        let rows = self.store.tokens().await.map_err(|error| {
            Status::unavailable(format!("cannot read the token table: {error}"))
        })?;
        let mut cache = self.cache.write().await;
        cache.any_issued = !rows.is_empty();
        cache.valid = rows
            .into_iter()
            .filter(|row| row.revoked_at_ms == 0)
            .filter_map(|row| {
                let hash: [u8; 32] = row.token_hash.as_slice().try_into().ok()?;
                let role = Role::try_from(row.role).ok()?;
                Some((
                    hash,
                    KnownToken {
                        name: row.name,
                        role,
                    },
                ))
            })
            .collect();
        cache.loaded = true;
        Ok((cache.valid.get(hash).cloned(), cache.any_issued))
    }

    /// The name and role of a valid token (for the web console's sign-in and each
    /// of its requests, so a revoked token ends its sessions); `None` when unknown or revoked.
    pub async fn identify(&self, secret_hash: &[u8; 32]) -> Result<Option<(String, Role)>, Status> {
        Ok(self
            .lookup(secret_hash)
            .await?
            .0
            .map(|token| (token.name, token.role)))
    }

    /// Whether the loopback rule still holds: no token was ever issued and no client
    /// certificate roles are configured.
    pub async fn loopback_open(&self) -> Result<bool, Status> {
        let (_, any_issued) = self.lookup(&[0; 32]).await?;
        Ok(!any_issued && self.certificate_roles.is_empty())
    }

    /// Lets the request through if its token has `needed`, or under the loopback rule.
    pub async fn authorize<T>(&self, request: &Request<T>, needed: Role) -> Result<Caller, Status> {
        self.authorize_any(request, &[needed]).await
    }

    /// Lets the request through if its token has one of `allowed`; under the loopback
    /// rule the caller acts in the first of them.
    pub async fn authorize_any<T>(
        &self,
        request: &Request<T>,
        allowed: &[Role],
    ) -> Result<Caller, Status> {
        let peer = request.remote_addr();
        let reason = request
            .metadata()
            .get_bin(REASON_METADATA)
            .and_then(|value| value.to_bytes().ok())
            .map(|bytes| String::from_utf8_lossy(&bytes).into_owned())
            .unwrap_or_default();
        let peer_text = peer.map(|addr| addr.to_string()).unwrap_or_default();
        let bearer = request
            .metadata()
            .get("authorization")
            .map(|value| {
                value
                    .to_str()
                    .ok()
                    .and_then(|text| text.strip_prefix("Bearer "))
                    .map(str::to_owned)
                    .ok_or_else(|| {
                        Status::unauthenticated("authorization must be \"Bearer <token>\"")
                    })
            })
            .transpose()?;
        let granted = |name: String, role: Role| {
            if allowed.contains(&role) {
                Ok(Caller {
                    name,
                    role,
                    peer: peer_text.clone(),
                    reason: reason.clone(),
                    under_loopback_rule: false,
                })
            } else {
                Err(Status::permission_denied(format!(
                    "{name:?} has role {}; this needs role {}",
                    role_name(role),
                    allowed
                        .iter()
                        .map(|role| role_name(*role))
                        .collect::<Vec<_>>()
                        .join(" or ")
                )))
            }
        };
        if bearer.is_none() {
            if let Some(certificate) = self.certificate_role(request) {
                let (name, role) = certificate?;
                return granted(name, role);
            }
        }
        let (token, any_issued) = match &bearer {
            Some(secret) => self.lookup(&secret_hash(secret)).await?,
            None => (None, self.lookup(&[0; 32]).await?.1),
        };
        let open = !any_issued && self.certificate_roles.is_empty();
        match (bearer, token) {
            (Some(_), Some(token)) => granted(token.name, token.role),
            (Some(_), None) => Err(Status::unauthenticated(
                "unknown or revoked token",
            )),
            (None, _) if open && peer.is_some_and(|addr: SocketAddr| addr.ip().is_loopback()) => {
                let stated = request
                    .metadata()
                    .get_bin(USER_METADATA)
                    .and_then(|value| value.to_bytes().ok())
                    .map(|bytes| String::from_utf8_lossy(&bytes).into_owned());
                Ok(Caller {
                    name: loopback_actor(stated.as_deref()),
                    role: allowed.first().copied().unwrap_or(Role::Unspecified),
                    peer: peer_text,
                    reason,
                    under_loopback_rule: true,
                })
            }
            (None, _) => Err(Status::unauthenticated(format!(
                "a bearer token (--token, COURTLINE_TOKEN or --token-file) or a client certificate with role {} is required",
                allowed.iter().map(|role| role_name(*role)).collect::<Vec<_>>().join(" or ")
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_distinct_and_hashes_ignore_surrounding_space() {
        let a = new_secret();
        assert!(a.starts_with(SECRET_PREFIX));
        assert_eq!(a.len(), SECRET_PREFIX.len() + 64);
        assert_ne!(a, new_secret());
        assert_eq!(secret_hash(&a), secret_hash(&format!(" {a}\n")));
    }

    #[test]
    fn loopback_actors_carry_the_stated_name_cleaned() {
        assert_eq!(loopback_actor(None), "loopback");
        assert_eq!(loopback_actor(Some("  ")), "loopback");
        assert_eq!(loopback_actor(Some("张伟")), "loopback:张伟");
        assert_eq!(
            loopback_actor(Some(" zhang.wei\n\u{1b}[31m")),
            "loopback:zhang.wei[31m"
        );
        assert_eq!(
            loopback_actor(Some(&"x".repeat(500))).chars().count(),
            "loopback:".len() + MAX_USER_CHARS
        );
    }

    #[test]
    fn under_the_loopback_rule_only_an_admin_token_may_be_issued() {
        let caller = |under_loopback_rule| Caller {
            name: "loopback:zhang.wei".into(),
            role: Role::Admin,
            peer: "127.0.0.1:1".into(),
            reason: String::new(),
            under_loopback_rule,
        };
        assert!(may_issue_token(&caller(true), Role::Admin).is_ok());
        for role in [Role::Switchboard, Role::Compliance, Role::Auditor] {
            let refused = may_issue_token(&caller(true), role).unwrap_err();
            assert_eq!(refused.code(), tonic::Code::FailedPrecondition);
            assert!(refused.message().contains("--role admin"), "{refused:?}");
            assert!(may_issue_token(&caller(false), role).is_ok());
        }
    }

    #[test]
    fn role_names_round_trip() {
        for role in [
            Role::Switchboard,
            Role::Compliance,
            Role::Auditor,
            Role::Admin,
            Role::Operator,
        ] {
            assert_eq!(parse_role(role_name(role)), Some(role));
        }
        assert_eq!(parse_role("Admin"), Some(Role::Admin));
        assert_eq!(parse_role("root"), None);
    }
}
