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
    /// Local address sockets are bound to.
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

    /// Binds the next free even port and its odd neighbour (non-blocking).
    pub fn bind(&self) -> Result<RtpSocket, PortsExhausted> {
        for _ in 0..self.count {
            let index = self.cursor.fetch_add(1, Ordering::Relaxed) % self.count;
            // `index < count` and count ≤ 32768, so this stays within the range.
            let port = self.first_even + (index as u16) * 2;
            if let Ok(pair) = self.bind_pair(port) {
                return Ok(pair);
            }
        }
        Err(PortsExhausted {
            low: self.first_even,
            high: self.first_even + (self.count.saturating_sub(1) as u16) * 2,
            ip: self.ip,
        })
    }

    fn bind_pair(&self, port: u16) -> io::Result<RtpSocket> {
        let rtp = UdpSocket::bind(SocketAddr::new(self.ip, port))?;
        let rtcp = UdpSocket::bind(SocketAddr::new(self.ip, port + 1))?;
        rtp.set_nonblocking(true)?;
        rtcp.set_nonblocking(true)?;
        Ok(RtpSocket { rtp, rtcp })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hands_out_even_ports_round_robin_and_skips_busy_ones() {
        let ports = RtpPorts::new("127.0.0.1".parse().unwrap(), 41001..=41009);
        let a = ports.bind().unwrap();
        let b = ports.bind().unwrap();
        assert_eq!(a.local_addr().unwrap().port(), 41002);
        assert_eq!(b.local_addr().unwrap().port(), 41004);
        assert_eq!(
            b.rtcp.local_addr().unwrap().port(),
            41005,
            "RTCP on the odd neighbour"
        );
        let c = ports.bind().unwrap();
        let d = ports.bind().unwrap();
        assert_eq!(c.local_addr().unwrap().port(), 41006);
        assert_eq!(d.local_addr().unwrap().port(), 41008);
        // All four are taken: the pool reports exhaustion instead of looping.
        let err = ports.bind().unwrap_err();
        assert!(err.to_string().contains("41002-41008"), "{err}");
        drop(b);
        assert_eq!(ports.bind().unwrap().local_addr().unwrap().port(), 41004);
    }

    #[test]
    fn skips_a_pair_whose_rtcp_port_is_busy() {
        let ports = RtpPorts::new("127.0.0.1".parse().unwrap(), 41021..=41026);
        let _busy = UdpSocket::bind("127.0.0.1:41023").unwrap();
        let pair = ports.bind().unwrap();
        assert_eq!(pair.local_addr().unwrap().port(), 41024);
        // 41026's neighbour is outside the range, so 41026 is never used.
        let err = ports.bind().unwrap_err();
        assert!(err.to_string().contains("41022-41024"), "{err}");
    }
}
