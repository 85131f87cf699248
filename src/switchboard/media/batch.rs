//! Batched UDP I/O: `recvmmsg` and `sendmmsg` over preallocated buffers, so a
//! batch of datagrams costs one system call and no allocation.
//!
//! Used by the media engine and by the load generator. Linux only (the
//! deployment target); each call is a thin wrapper around the system call with
//! every buffer owned by the batch.

use std::io;
use std::mem::{size_of, zeroed};
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::os::fd::RawFd;

/// Largest datagram a batch slot holds (fits any Ethernet MTU).
pub const SLOT_LEN: usize = 1500;

/// Room for one `SCM_TIMESTAMPNS` control message.
const CONTROL_LEN: usize = 64;

/// Receives up to `capacity` datagrams per system call.
pub struct RecvBatch {
    /// Datagram payloads, one slot each.
    data: Vec<[u8; SLOT_LEN]>,
    /// Source addresses.
    addrs: Vec<libc::sockaddr_storage>,
    /// Control buffers (kernel receive timestamps when enabled on the socket).
    control: Vec<[u8; CONTROL_LEN]>,
    /// One iovec per slot, pointing into `data`.
    iovecs: Vec<libc::iovec>,
    /// The headers handed to the kernel.
    headers: Vec<libc::mmsghdr>,
    /// Datagrams filled by the last receive.
    filled: usize,
}

// SAFETY: the raw pointers in the headers only ever point into buffers the
// batch owns (they are re-set before each system call), so moving the batch
// to another thread moves everything they refer to.
unsafe impl Send for RecvBatch {}

/// One received datagram, borrowed from a [`RecvBatch`].
pub struct Received<'a> {
    /// The payload.
    pub data: &'a [u8],
    /// Who sent it.
    pub from: SocketAddr,
    /// Kernel arrival time (CLOCK_REALTIME, ns) if the socket has `SO_TIMESTAMPNS`.
    pub arrived_ns: Option<i128>,
}

impl RecvBatch {
    /// A batch of `capacity` slots (at least one).
    pub fn new(capacity: usize) -> RecvBatch {
        let capacity = capacity.max(1);
        // SAFETY: these are plain C structs for which all-zero is a valid value.
        let (addr, iov, hdr) = unsafe {
            (
                zeroed::<libc::sockaddr_storage>(),
                zeroed::<libc::iovec>(),
                zeroed::<libc::mmsghdr>(),
            )
        };
        RecvBatch {
            data: vec![[0; SLOT_LEN]; capacity],
            addrs: vec![addr; capacity],
            control: vec![[0; CONTROL_LEN]; capacity],
            iovecs: vec![iov; capacity],
            headers: vec![hdr; capacity],
            filled: 0,
        }
    }

    /// Receives what is queued on `fd` without blocking; returns how many
    /// datagrams arrived (0 when none was waiting).
    pub fn recv(&mut self, fd: RawFd) -> io::Result<usize> {
        self.filled = 0;
        for i in 0..self.data.len() {
            self.iovecs[i] = libc::iovec {
                iov_base: self.data[i].as_mut_ptr().cast(),
                iov_len: SLOT_LEN,
            };
            let hdr = &mut self.headers[i].msg_hdr;
            hdr.msg_name = (&mut self.addrs[i] as *mut libc::sockaddr_storage).cast();
            hdr.msg_namelen = size_of::<libc::sockaddr_storage>() as libc::socklen_t;
            hdr.msg_iov = &mut self.iovecs[i];
            hdr.msg_iovlen = 1;
            hdr.msg_control = self.control[i].as_mut_ptr().cast();
            hdr.msg_controllen = CONTROL_LEN as _;
            hdr.msg_flags = 0;
            self.headers[i].msg_len = 0;
        }
        // SAFETY: every header points at buffers owned by `self` that outlive the call.
        let n = unsafe {
            libc::recvmmsg(
                fd,
                self.headers.as_mut_ptr(),
                self.headers.len() as libc::c_uint,
                libc::MSG_DONTWAIT,
                std::ptr::null_mut(),
            )
        };
        if n < 0 {
            let e = io::Error::last_os_error();
            return match e.kind() {
                io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted => Ok(0),
                _ => Err(e),
            };
        }
        self.filled = n as usize;
        Ok(self.filled)
    }

    /// Datagram `i` of the last receive (`i` < the count it returned).
    pub fn get(&self, i: usize) -> Option<Received<'_>> {
        if i >= self.filled {
            return None;
        }
        let hdr = &self.headers[i];
        let len = (hdr.msg_len as usize).min(SLOT_LEN);
        let from = sockaddr_to_std(&self.addrs[i])?;
        Some(Received {
            data: &self.data[i][..len],
            from,
            arrived_ns: receive_timestamp(&hdr.msg_hdr),
        })
    }
}

/// Collects outgoing datagrams and sends them with `sendmmsg`.
pub struct SendBatch {
    /// Datagram bytes, one slot each.
    data: Vec<[u8; SLOT_LEN]>,
    /// Length used in each slot.
    lens: Vec<usize>,
    /// Destinations.
    addrs: Vec<libc::sockaddr_storage>,
    /// Destination address lengths.
    addr_lens: Vec<libc::socklen_t>,
    /// One iovec per slot.
    iovecs: Vec<libc::iovec>,
    /// The headers handed to the kernel.
    headers: Vec<libc::mmsghdr>,
    /// Slots in use.
    queued: usize,
}

// SAFETY: as for `RecvBatch`: the headers point only into the batch's own buffers.
unsafe impl Send for SendBatch {}

/// What one flush did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Flushed {
    /// Datagrams the kernel took.
    pub sent: usize,
    /// Datagrams dropped because the socket buffer was full or the send failed.
    pub dropped: usize,
}

impl SendBatch {
    /// A batch of `capacity` slots (at least one).
    pub fn new(capacity: usize) -> SendBatch {
        let capacity = capacity.max(1);
        // SAFETY: plain C structs for which all-zero is valid.
        let (addr, iov, hdr) = unsafe {
            (
                zeroed::<libc::sockaddr_storage>(),
                zeroed::<libc::iovec>(),
                zeroed::<libc::mmsghdr>(),
            )
        };
        SendBatch {
            data: vec![[0; SLOT_LEN]; capacity],
            lens: vec![0; capacity],
            addrs: vec![addr; capacity],
            addr_lens: vec![0; capacity],
            iovecs: vec![iov; capacity],
            headers: vec![hdr; capacity],
            queued: 0,
        }
    }

    /// Whether every slot is taken (flush before pushing more).
    pub fn is_full(&self) -> bool {
        self.queued == self.data.len()
    }

    /// Datagrams waiting.
    pub fn len(&self) -> usize {
        self.queued
    }

    /// Whether nothing is waiting.
    pub fn is_empty(&self) -> bool {
        self.queued == 0
    }

    /// Queues one datagram to `to`, written by `write` into a slot; `write`
    /// returns the length. Returns false (and queues nothing) when full.
    pub fn push(&mut self, to: SocketAddr, write: impl FnOnce(&mut [u8]) -> usize) -> bool {
        if self.is_full() {
            return false;
        }
        let i = self.queued;
        let len = write(&mut self.data[i]).min(SLOT_LEN);
        if len == 0 {
            return true;
        }
        self.lens[i] = len;
        self.addr_lens[i] = std_to_sockaddr(to, &mut self.addrs[i]);
        self.queued += 1;
        true
    }

    /// Sends everything queued on `fd`; the batch is empty afterwards.
    pub fn flush(&mut self, fd: RawFd) -> Flushed {
        let total = self.queued;
        let mut done = Flushed::default();
        let mut start = 0;
        for i in 0..total {
            self.iovecs[i] = libc::iovec {
                iov_base: self.data[i].as_mut_ptr().cast(),
                iov_len: self.lens[i],
            };
            let hdr = &mut self.headers[i].msg_hdr;
            hdr.msg_name = (&mut self.addrs[i] as *mut libc::sockaddr_storage).cast();
            hdr.msg_namelen = self.addr_lens[i];
            hdr.msg_iov = &mut self.iovecs[i];
            hdr.msg_iovlen = 1;
            hdr.msg_control = std::ptr::null_mut();
            hdr.msg_controllen = 0;
            hdr.msg_flags = 0;
        }
        while start < total {
            // SAFETY: headers [start, total) point at buffers owned by `self`.
            let n = unsafe {
                libc::sendmmsg(
                    fd,
                    self.headers[start..].as_mut_ptr(),
                    (total - start) as libc::c_uint,
                    libc::MSG_DONTWAIT,
                )
            };
            if n < 0 {
                if io::Error::last_os_error().kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                // The datagram at `start` cannot go (buffer full, unreachable):
                // drop it and carry on with the rest.
                done.dropped += 1;
                start += 1;
            } else {
                done.sent += n as usize;
                start += n as usize;
            }
        }
        self.queued = 0;
        done
    }
}

/// Sends one datagram on `fd` without blocking or allocating.
pub fn send_to(fd: RawFd, data: &[u8], to: SocketAddr) -> io::Result<()> {
    // SAFETY: all-zero is a valid sockaddr_storage.
    let mut addr: libc::sockaddr_storage = unsafe { zeroed() };
    let addr_len = std_to_sockaddr(to, &mut addr);
    // SAFETY: `data` and `addr` are valid for the duration of the call.
    let n = unsafe {
        libc::sendto(
            fd,
            data.as_ptr().cast(),
            data.len(),
            libc::MSG_DONTWAIT,
            (&addr as *const libc::sockaddr_storage).cast(),
            addr_len,
        )
    };
    if n < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// Receives one datagram into `buf` without blocking (a `WouldBlock` error
/// when none is waiting), with its source and its kernel arrival time
/// (CLOCK_REALTIME, ns) if the socket has `SO_TIMESTAMPNS`. For sockets whose
/// datagrams may be larger than [`SLOT_LEN`] (SIP).
pub fn recv_one(fd: RawFd, buf: &mut [u8]) -> io::Result<(usize, SocketAddr, Option<i128>)> {
    let mut control = [0u8; CONTROL_LEN];
    // SAFETY: plain C structs for which all-zero is a valid value.
    let (mut addr, mut hdr) =
        unsafe { (zeroed::<libc::sockaddr_storage>(), zeroed::<libc::msghdr>()) };
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    hdr.msg_name = (&mut addr as *mut libc::sockaddr_storage).cast();
    hdr.msg_namelen = size_of::<libc::sockaddr_storage>() as libc::socklen_t;
    hdr.msg_iov = &mut iov;
    hdr.msg_iovlen = 1;
    hdr.msg_control = control.as_mut_ptr().cast();
    hdr.msg_controllen = CONTROL_LEN as _;
    // SAFETY: the header points at `addr`, `iov` (into `buf`) and `control`,
    // all of which outlive the call.
    let n = unsafe { libc::recvmsg(fd, &mut hdr, libc::MSG_DONTWAIT) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    let from = sockaddr_to_std(&addr).ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            "datagram from an address family other than IPv4 or IPv6",
        )
    })?;
    Ok((n as usize, from, receive_timestamp(&hdr)))
}

/// Asks the kernel to stamp each received datagram with its arrival time.
pub fn enable_receive_timestamps(fd: RawFd) -> io::Result<()> {
    set_int_option(fd, libc::SOL_SOCKET, libc::SO_TIMESTAMPNS, 1)
}

/// Sets the socket's receive and send buffer sizes (the kernel may cap them).
pub fn set_buffer_sizes(fd: RawFd, bytes: usize) -> io::Result<()> {
    let bytes = i32::try_from(bytes).unwrap_or(i32::MAX);
    set_int_option(fd, libc::SOL_SOCKET, libc::SO_RCVBUF, bytes)?;
    set_int_option(fd, libc::SOL_SOCKET, libc::SO_SNDBUF, bytes)
}

fn set_int_option(fd: RawFd, level: i32, name: i32, value: i32) -> io::Result<()> {
    // SAFETY: `value` is a valid c_int for the duration of the call.
    let rc = unsafe {
        libc::setsockopt(
            fd,
            level,
            name,
            (&value as *const i32).cast(),
            size_of::<i32>() as libc::socklen_t,
        )
    };
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

pub(crate) fn std_to_sockaddr(
    addr: SocketAddr,
    out: &mut libc::sockaddr_storage,
) -> libc::socklen_t {
    match addr {
        SocketAddr::V4(v4) => {
            // SAFETY: sockaddr_storage is large and aligned enough for sockaddr_in.
            let sin =
                unsafe { &mut *(out as *mut libc::sockaddr_storage).cast::<libc::sockaddr_in>() };
            sin.sin_family = libc::AF_INET as libc::sa_family_t;
            sin.sin_port = v4.port().to_be();
            sin.sin_addr = libc::in_addr {
                s_addr: u32::from_ne_bytes(v4.ip().octets()),
            };
            size_of::<libc::sockaddr_in>() as libc::socklen_t
        }
        SocketAddr::V6(v6) => {
            // SAFETY: sockaddr_storage is large and aligned enough for sockaddr_in6.
            let sin6 =
                unsafe { &mut *(out as *mut libc::sockaddr_storage).cast::<libc::sockaddr_in6>() };
            sin6.sin6_family = libc::AF_INET6 as libc::sa_family_t;
            sin6.sin6_port = v6.port().to_be();
            sin6.sin6_flowinfo = v6.flowinfo();
            sin6.sin6_addr = libc::in6_addr {
                s6_addr: v6.ip().octets(),
            };
            sin6.sin6_scope_id = v6.scope_id();
            size_of::<libc::sockaddr_in6>() as libc::socklen_t
        }
    }
}

fn sockaddr_to_std(addr: &libc::sockaddr_storage) -> Option<SocketAddr> {
    match i32::from(addr.ss_family) {
        libc::AF_INET => {
            // SAFETY: the family says this is a sockaddr_in.
            let sin =
                unsafe { &*(addr as *const libc::sockaddr_storage).cast::<libc::sockaddr_in>() };
            let ip = Ipv4Addr::from(sin.sin_addr.s_addr.to_ne_bytes());
            Some(SocketAddr::V4(SocketAddrV4::new(
                ip,
                u16::from_be(sin.sin_port),
            )))
        }
        libc::AF_INET6 => {
            // SAFETY: the family says this is a sockaddr_in6.
            let sin6 =
                unsafe { &*(addr as *const libc::sockaddr_storage).cast::<libc::sockaddr_in6>() };
            Some(SocketAddr::V6(SocketAddrV6::new(
                Ipv6Addr::from(sin6.sin6_addr.s6_addr),
                u16::from_be(sin6.sin6_port),
                sin6.sin6_flowinfo,
                sin6.sin6_scope_id,
            )))
        }
        _ => None,
    }
}

fn receive_timestamp(hdr: &libc::msghdr) -> Option<i128> {
    // SAFETY: the kernel filled `msg_control` up to `msg_controllen`; the CMSG
    // macros walk it within those bounds.
    unsafe {
        let mut cmsg = libc::CMSG_FIRSTHDR(hdr);
        while !cmsg.is_null() {
            if (*cmsg).cmsg_level == libc::SOL_SOCKET && (*cmsg).cmsg_type == libc::SCM_TIMESTAMPNS
            {
                let ts = std::ptr::read_unaligned(libc::CMSG_DATA(cmsg).cast::<libc::timespec>());
                return Some(i128::from(ts.tv_sec) * 1_000_000_000 + i128::from(ts.tv_nsec));
            }
            cmsg = libc::CMSG_NXTHDR(hdr, cmsg);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsRawFd;

    #[test]
    fn batch_round_trip_with_timestamps() {
        let rx = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let tx = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        enable_receive_timestamps(rx.as_raw_fd()).unwrap();
        let to = rx.local_addr().unwrap();
        let mut out = SendBatch::new(4);
        for i in 0..4u8 {
            assert!(out.push(to, |buf| {
                buf[..3].copy_from_slice(&[i, i, i]);
                3
            }));
        }
        assert!(out.is_full());
        assert_eq!(
            out.flush(tx.as_raw_fd()),
            Flushed {
                sent: 4,
                dropped: 0
            }
        );
        let mut batch = RecvBatch::new(8);
        let mut got = Vec::new();
        for _ in 0..100 {
            let n = batch.recv(rx.as_raw_fd()).unwrap();
            for i in 0..n {
                let p = batch.get(i).unwrap();
                assert_eq!(p.from, tx.local_addr().unwrap());
                assert!(p.arrived_ns.is_some());
                got.push(p.data.to_vec());
            }
            if got.len() == 4 {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        assert_eq!(got, (0..4u8).map(|i| vec![i; 3]).collect::<Vec<_>>());
        assert_eq!(batch.recv(rx.as_raw_fd()).unwrap(), 0, "nothing left");
    }
}
