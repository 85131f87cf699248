//! RTP port allocation from the configured range.
//!
//! Ports are handed out round-robin over the even ports, each with its odd
//! neighbour bound for RTCP (RFC 3550 §11), so a port just released is not reused at
//! once and late packets of an old call do not land in a new one. Whether a
//! port is free is left to the kernel: binding is the check.

use std::io;
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::ops::RangeInclusive;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

/// One call leg's media sockets: RTP on an even port, RTCP on the next.
#[derive(Debug)]
pub struct RtpSocket {
    /// RTP (the port in the SDP).
    pub rtp: UdpSocket,
    /// RTCP, on the RTP port + 1.
    pub rtcp: UdpSocket,
}

impl RtpSocket {
    /// The RTP address (what goes into SDP).
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.rtp.local_addr()
    }
}

/// No even/odd port pair in the range could be bound.
#[derive(Debug, thiserror::Error)]
#[error(
    "no free RTP port in {low}-{high} on {ip}: widen [media] rtp_ports or lower [sip] max_calls"
)]
pub struct PortsExhausted {
    /// Bottom of the configured range.
    pub low: u16,
    /// Top of the configured range.
    pub high: u16,
    /// Address binding was tried on.
    pub ip: IpAddr,
}

/// The RTP port range, shared by all calls.
#[derive(Debug, Clone)]
pub struct RtpPorts {
    /// Local address sockets are bound to (the SIP listen address).
    ip: IpAddr,
    /// First even port of the range.
    first_even: u16,
    /// How many even ports the range has whose odd neighbour is in it too.
    count: usize,
    /// Round-robin position, shared by clones.
    cursor: Arc<AtomicUsize>,
}

impl RtpPorts {
    /// A pool over `range` (even ports only), binding on `ip`.
    pub fn new(ip: IpAddr, range: RangeInclusive<u16>) -> RtpPorts {
        let first_even = range.start() + range.start() % 2;
        let count = if first_even >= *range.end() {
            0
        } else {
            usize::from((range.end() - first_even - 1) / 2 + 1)
        };
        RtpPorts {
            ip,
            first_even,
            count,
            cursor: Arc::new(AtomicUsize::new(0)),
        }
    }

    /// Binds the next free even port and its odd neighbour (non-blocking),
    /// for media with `peer` (see [`bind_ip`]).
    pub fn bind(&self, peer: IpAddr) -> Result<RtpSocket, PortsExhausted> {
        let ip = bind_ip(self.ip, peer);
        for _ in 0..self.count {
            let index = self.cursor.fetch_add(1, Ordering::Relaxed) % self.count;
            // `index < count` and count ≤ 32768, so this stays within the range.
            let port = self.first_even + (index as u16) * 2;
            if let Ok(pair) = bind_pair(ip, port) {
                return Ok(pair);
            }
        }
        Err(PortsExhausted {
            low: self.first_even,
            high: self.first_even + (self.count.saturating_sub(1) as u16) * 2,
            ip,
        })
    }
}

/// Where a call leg's media sockets bind: the SIP listen address, except
/// that on a dual-stack listen address (`[::]`) an IPv4 peer gets IPv4
/// sockets (`0.0.0.0`), so that the media engine and the SDP only ever see
/// plain IPv4 addresses, never IPv4-mapped IPv6 ones (`::ffff:a.b.c.d`).
pub fn bind_ip(listen: IpAddr, peer: IpAddr) -> IpAddr {
    match (listen, peer.to_canonical()) {
        (IpAddr::V6(any), IpAddr::V4(_)) if any.is_unspecified() => {
            IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED)
        }
        _ => listen,
    }
}

/// RTP on `port` and RTCP on the next, both non-blocking.
fn bind_pair(ip: IpAddr, port: u16) -> io::Result<RtpSocket> {
    let rtp = UdpSocket::bind(SocketAddr::new(ip, port))?;
    let rtcp = UdpSocket::bind(SocketAddr::new(ip, port + 1))?;
    rtp.set_nonblocking(true)?;
    rtcp.set_nonblocking(true)?;
    Ok(RtpSocket { rtp, rtcp })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The peer of the tests' calls.
    const LOCAL: IpAddr = IpAddr::V4(std::net::Ipv4Addr::LOCALHOST);

    #[test]
    fn a_dual_stack_listen_address_binds_ipv4_peers_media_on_ipv4() {
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        assert_eq!(bind_ip(ip("::"), ip("192.0.2.1")), ip("0.0.0.0"));
        assert_eq!(bind_ip(ip("::"), ip("::ffff:192.0.2.1")), ip("0.0.0.0"));
        assert_eq!(bind_ip(ip("::"), ip("2001:db8::1")), ip("::"));
        assert_eq!(bind_ip(ip("::1"), ip("::1")), ip("::1"));
        assert_eq!(bind_ip(ip("0.0.0.0"), ip("192.0.2.1")), ip("0.0.0.0"));
        assert_eq!(bind_ip(ip("127.0.0.1"), ip("127.0.0.1")), ip("127.0.0.1"));
    }

    // The ranges below lie under the kernel's ephemeral ports (32768-60999 by
    // default), so no other test's client socket can take one of them meanwhile.
    #[test]
    fn hands_out_even_ports_round_robin_and_skips_busy_ones() {
        let ports = RtpPorts::new("127.0.0.1".parse().unwrap(), 14001..=14009);
        let a = ports.bind(LOCAL).unwrap();
        let b = ports.bind(LOCAL).unwrap();
        assert_eq!(a.local_addr().unwrap().port(), 14002);
        assert_eq!(b.local_addr().unwrap().port(), 14004);
        assert_eq!(
            b.rtcp.local_addr().unwrap().port(),
            14005,
            "RTCP on the odd neighbour"
        );
        let c = ports.bind(LOCAL).unwrap();
        let d = ports.bind(LOCAL).unwrap();
        assert_eq!(c.local_addr().unwrap().port(), 14006);
        assert_eq!(d.local_addr().unwrap().port(), 14008);
        // All four are taken: the pool reports exhaustion instead of looping.
        let err = ports.bind(LOCAL).unwrap_err();
        assert!(err.to_string().contains("14002-14008"), "{err}");
        drop(b);
        assert_eq!(
            ports.bind(LOCAL).unwrap().local_addr().unwrap().port(),
            14004
        );
    }

    #[test]
    fn skips_a_pair_whose_rtcp_port_is_busy() {
        let ports = RtpPorts::new("127.0.0.1".parse().unwrap(), 14021..=14026);
        let _busy = UdpSocket::bind("127.0.0.1:14023").unwrap();
        let pair = ports.bind(LOCAL).unwrap();
        assert_eq!(pair.local_addr().unwrap().port(), 14024);
        // 14026's neighbour is outside the range, so 14026 is never used.
        let err = ports.bind(LOCAL).unwrap_err();
        assert!(err.to_string().contains("14022-14024"), "{err}");
    }
}
