//! A strict reading of the SIP URIs an admin writes in the configuration
//! (operators, operator accounts, the registrar), so that a typo such as
//! `sip:operator@127.0.0.1:50a90` or `sip:operator127.0.0.1:5090` is refused at
//! start-up instead of failing every call. The grammar is RFC 3261 §25.1's,
//! reduced to what a configured target needs: scheme, user, host, port and
//! URI parameters (no password, no headers).

use std::net::{Ipv4Addr, Ipv6Addr};

/// A configured SIP target, parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfiguredUri {
    /// `sips:` rather than `sip:`.
    pub secure: bool,
    /// The user part (before `@`), if any.
    pub user: Option<String>,
    /// Host name, IPv4 address or bracketed IPv6 address, as written.
    pub host: String,
    /// The port, if written.
    pub port: Option<u16>,
    /// The `transport` parameter, lowercased, if written.
    pub transport: Option<String>,
}

/// Transports courtline can send an operator INVITE over.
const TRANSPORTS: [&str; 3] = ["udp", "tcp", "tls"];

/// Characters RFC 3261 allows in a user part besides letters and digits
/// (unreserved, user-unreserved and `%` escapes).
const USER_CHARS: &str = "-_.!~*'()&=+$,;?/%";

/// Parses `text`; the error says what is wrong, for "`key`: \"text\" {error}".
pub fn parse(text: &str) -> Result<ConfiguredUri, String> {
    let (scheme, rest) = text
        .split_once(':')
        .ok_or_else(|| "does not start with sip:".to_string())?;
    let secure = match scheme.to_ascii_lowercase().as_str() {
        "sip" => false,
        "sips" => true,
        _ => {
            return Err(format!(
                "has scheme \"{scheme}:\"; only sip: (or sips:) is accepted"
            ))
        }
    };
    if rest.contains('?') {
        return Err("has URI headers (after ?), which a configured target cannot carry".into());
    }
    let (address, params) = match rest.split_once(';') {
        Some((address, params)) => (address, Some(params)),
        None => (rest, None),
    };
    let (user, host_port) = match address.rsplit_once('@') {
        Some((user, host_port)) => (Some(user), host_port),
        None => (None, address),
    };
    if let Some(user) = user {
        if user.is_empty() {
            return Err("has an empty user part before @".into());
        }
        if user.contains(':') {
            return Err(
                "has a password in the URI; give it in [[operator_accounts]] instead".into(),
            );
        }
        if let Some(bad) = user
            .chars()
            .find(|c| !c.is_ascii_alphanumeric() && !USER_CHARS.contains(*c))
        {
            return Err(format!("has {bad:?} in its user part"));
        }
    }
    let (host, port) = split_host_port(host_port)?;
    check_host(host)?;
    let transport = match params {
        Some(params) => transport_param(params)?,
        None => None,
    };
    Ok(ConfiguredUri {
        secure,
        user: user.map(str::to_owned),
        host: host.to_owned(),
        port,
        transport,
    })
}

/// Splits `host[:port]` (IPv6 hosts in brackets) and reads the port.
fn split_host_port(host_port: &str) -> Result<(&str, Option<u16>), String> {
    if host_port.is_empty() {
        return Err("has no host".into());
    }
    let (host, port) = if host_port.starts_with('[') {
        let end = host_port
            .find(']')
            .ok_or_else(|| "has an IPv6 address without its closing ]".to_string())?;
        let (host, after) = host_port.split_at(end + 1);
        match after {
            "" => (host, None),
            _ => match after.strip_prefix(':') {
                Some(port) => (host, Some(port)),
                None => return Err(format!("has {after:?} after the IPv6 address")),
            },
        }
    } else {
        match host_port.split_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (host_port, None),
        }
    };
    let port = match port {
        None => None,
        Some(text) => match text.parse::<u16>() {
            Ok(port) if port > 0 && text.bytes().all(|b| b.is_ascii_digit()) => Some(port),
            _ => {
                return Err(format!(
                    "has port {text:?}, which is not a number from 1 to 65535"
                ))
            }
        },
    };
    Ok((host, port))
}

/// A host must be an IPv4 address, a bracketed IPv6 address or a host name
/// whose last label starts with a letter (so a mistyped address such as
/// `operator127.0.0.1` is not taken for a name).
fn check_host(host: &str) -> Result<(), String> {
    if let Some(inner) = host.strip_prefix('[') {
        let inner = inner.trim_end_matches(']');
        return inner
            .parse::<Ipv6Addr>()
            .map(|_| ())
            .map_err(|_| format!("has host {host:?}, which is not an IPv6 address"));
    }
    if host.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
        return host
            .parse::<Ipv4Addr>()
            .map(|_| ())
            .map_err(|_| format!("has host {host:?}, which is not an IPv4 address"));
    }
    let labels: Vec<&str> = host.strip_suffix('.').unwrap_or(host).split('.').collect();
    let label_ok = |label: &&str| {
        !label.is_empty()
            && !label.starts_with('-')
            && !label.ends_with('-')
            && label
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-')
    };
    let top_ok = labels
        .last()
        .is_some_and(|top| top.starts_with(|c: char| c.is_ascii_alphabetic()));
    if labels.iter().all(label_ok) && top_ok {
        Ok(())
    } else {
        Err(format!(
            "has host {host:?}, which is neither an IP address nor a host name"
        ))
    }
}

/// Reads `;name[=value]` parameters; only `transport` is interpreted.
fn transport_param(params: &str) -> Result<Option<String>, String> {
    let mut transport = None;
    for param in params.split(';') {
        let (name, value) = param.split_once('=').unwrap_or((param, ""));
        if name.is_empty() {
            return Err("has an empty ;parameter".into());
        }
        if name.eq_ignore_ascii_case("transport") {
            let value = value.to_ascii_lowercase();
            if !TRANSPORTS.contains(&value.as_str()) {
                return Err(format!("has transport={value:?}; use udp, tcp or tls"));
            }
            transport = Some(value);
        }
    }
    Ok(transport)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn good_uris_parse_into_their_parts() {
        assert_eq!(
            parse("sip:operator@127.0.0.1:5090"),
            Ok(ConfiguredUri {
                secure: false,
                user: Some("operator".into()),
                host: "127.0.0.1".into(),
                port: Some(5090),
                transport: None,
            })
        );
        let uri = parse("sip:8000@pbx.court.example;transport=TCP;lr").unwrap();
        assert_eq!(
            (uri.host.as_str(), uri.port, uri.transport.as_deref()),
            ("pbx.court.example", None, Some("tcp"))
        );
        let uri = parse("sips:desk@[2001:db8::1]:5061").unwrap();
        assert!(uri.secure);
        assert_eq!((uri.host.as_str(), uri.port), ("[2001:db8::1]", Some(5061)));
        assert_eq!(parse("sip:192.0.2.10").unwrap().user, None);
        assert!(parse("sip:%2B86-21@pbx").is_ok());
    }

    #[test]
    fn typos_are_refused_with_what_is_wrong() {
        for (uri, needle) in [
            ("sip:operator@127.0.0.1:50a90", "port \"50a90\""),
            ("sip:operator@127.0.0.1:0", "port \"0\""),
            ("sip:operator@127.0.0.1:65536", "port \"65536\""),
            ("sip:operator@127.0.0.1:", "port \"\""),
            (
                "sip:operator127.0.0.1:5090",
                "neither an IP address nor a host name",
            ),
            ("sip:operator@127.0.0.300", "not an IPv4 address"),
            ("sip:operator@[::1", "closing ]"),
            ("sip:@pbx", "empty user"),
            ("sip:op:secret@pbx", "password"),
            ("sip:op erator@pbx", "' '"),
            ("sip:op@pbx;transport=sctp", "transport=\"sctp\""),
            ("sip:op@", "no host"),
            ("sip:op@pbx?subject=x", "headers"),
            ("http://example.com", "scheme \"http:\""),
            ("operator at desk 3", "sip:"),
            ("sip:op@-pbx.example", "host name"),
        ] {
            let error = parse(uri).expect_err(uri);
            assert!(error.contains(needle), "{uri}: {error}");
        }
    }
}
