//! Thin adapter over io_uring for the media engine's paced sends: each packet
//! is queued as an `IORING_OP_SENDMSG` on its own call's socket, and a whole
//! 1 ms tick of packets goes to the kernel with one `io_uring_enter`, instead
//! of one `sendmsg` system call per packet (see `sys::send_parts`).
//!
//! Header and payload are copied into an arena entry that also holds the
//! packet's `msghdr`, `iovec` and address; [`SendRing::flush`] waits for every
//! queued packet's completion before the arena is reused, so nothing the
//! kernel reads can change or go away under it. `MSG_DONTWAIT` keeps today's
//! rule for a full socket buffer: the packet is dropped (`EAGAIN`), never
//! parked in the kernel for later.

use std::io;
use std::net::SocketAddr;
use std::os::fd::RawFd;

use io_uring::{opcode, types, IoUring};

/// Largest packet the arena holds (RTP header plus a 20 ms frame fits many times).
const MAX_PACKET: usize = 512;

/// One packet waiting in the ring, with everything its SQE points at.
struct Queued<T> {
    /// What the engine needs to know about the packet if sending it fails.
    tag: T,
    /// Header then payload, as sent.
    bytes: [u8; MAX_PACKET],
    /// Destination.
    addr: libc::sockaddr_storage,
    /// The one buffer of `msg`: `bytes[..len]`.
    iov: libc::iovec,
    /// What the SQE points at.
    msg: libc::msghdr,
}

/// An io_uring plus the arena of the packets queued on it since the last flush.
pub struct SendRing<T> {
    /// Submission and completion queues.
    ring: IoUring,
    /// Fixed-size (never reallocated, so SQE pointers into it stay valid) packet slots.
    arena: Box<[Queued<T>]>,
    /// Slots in use: `arena[..queued]`.
    queued: usize,
    /// Packets that failed with something other than `EAGAIN`, oldest first,
    /// until [`SendRing::flush`] hands them out.
    failed: Vec<(T, io::Error)>,
}

// SAFETY: the raw pointers in `Queued` only point into the ring's own boxed
// arena, which moves with it; nothing is shared with another thread.
unsafe impl<T: Send> Send for SendRing<T> {}

impl<T: Copy + Default> SendRing<T> {
    /// A ring of `capacity` submission entries and as many arena slots.
    pub fn new(capacity: u32) -> io::Result<SendRing<T>> {
        let ring = IoUring::new(capacity)?;
        let slots = ring.params().sq_entries() as usize;
        let arena = (0..slots)
            .map(|_| Queued {
                tag: T::default(),
                bytes: [0; MAX_PACKET],
                // SAFETY: all-zero is a valid sockaddr_storage and msghdr.
                addr: unsafe { std::mem::zeroed() },
                iov: libc::iovec {
                    iov_base: std::ptr::null_mut(),
                    iov_len: 0,
                },
                // SAFETY: as above.
                msg: unsafe { std::mem::zeroed() },
            })
            .collect();
        Ok(SendRing {
            ring,
            arena,
            queued: 0,
            failed: Vec::new(),
        })
    }

    /// Queues one datagram of `header` then `payload` to `to` on `fd`; a full
    /// arena is flushed first. `fd` must stay open until the next flush.
    pub fn queue(&mut self, fd: RawFd, header: &[u8], payload: &[u8], to: SocketAddr, tag: T) {
        let len = header.len() + payload.len();
        if len > MAX_PACKET {
            // Not a paced packet the engine makes; keep the order and send it as it is.
            self.flush_into_failed();
            if let Err(e) = super::sys::send_parts(fd, header, payload, to) {
                if e.kind() != io::ErrorKind::WouldBlock {
                    self.failed.push((tag, e));
                }
            }
            return;
        }
        if self.queued == self.arena.len() {
            self.flush_into_failed();
        }
        let index = self.queued;
        let slot = &mut self.arena[index];
        slot.tag = tag;
        slot.bytes[..header.len()].copy_from_slice(header);
        slot.bytes[header.len()..len].copy_from_slice(payload);
        let addr_len = super::batch::std_to_sockaddr(to, &mut slot.addr);
        slot.iov = libc::iovec {
            iov_base: slot.bytes.as_mut_ptr().cast(),
            iov_len: len,
        };
        slot.msg.msg_name = (&mut slot.addr as *mut libc::sockaddr_storage).cast();
        slot.msg.msg_namelen = addr_len;
        slot.msg.msg_iov = &mut slot.iov;
        slot.msg.msg_iovlen = 1;
        let entry = opcode::SendMsg::new(types::Fd(fd), &slot.msg)
            .flags(libc::MSG_DONTWAIT as u32)
            .build()
            .user_data(index as u64);
        // SAFETY: everything the entry points at lives in `arena[index]`,
        // which is neither moved nor rewritten until `flush_into_failed` has
        // reaped its completion. The queue has room: it is as long as the
        // arena and emptied by every flush.
        let pushed = unsafe { self.ring.submission().push(&entry) };
        if pushed.is_err() {
            // Cannot happen (see above); if it did, the packet is lost like one
            // on a full socket buffer rather than overwriting a queued slot.
            return;
        }
        self.queued += 1;
    }

    /// Submits every queued packet with one system call, waits for their
    /// completions (UDP sends complete at once) and returns those that failed
    /// with something other than `EAGAIN` since the last flush.
    pub fn flush(&mut self) -> Vec<(T, io::Error)> {
        self.flush_into_failed();
        std::mem::take(&mut self.failed)
    }

    fn flush_into_failed(&mut self) {
        let mut outstanding = self.queued;
        while outstanding > 0 {
            match self.ring.submit_and_wait(outstanding) {
                Ok(_) => {}
                Err(e)
                    if matches!(
                        e.raw_os_error(),
                        Some(libc::EINTR | libc::EAGAIN | libc::EBUSY)
                    ) => {}
                Err(e) => {
                    // The ring itself failed, not one send (a bug or a broken
                    // kernel): the tick's packets still queued are lost.
                    tracing::warn!(
                        "io_uring submission failed, {outstanding} RTP packets of this tick are lost: {e}"
                    );
                    break;
                }
            }
            for cqe in self.ring.completion() {
                outstanding = outstanding.saturating_sub(1);
                let result = cqe.result();
                if result < 0 && result != -libc::EAGAIN {
                    let tag = self
                        .arena
                        .get(cqe.user_data() as usize)
                        .map(|slot| slot.tag)
                        .unwrap_or_default();
                    self.failed
                        .push((tag, io::Error::from_raw_os_error(-result)));
                }
            }
        }
        self.queued = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsRawFd;
    use std::time::Duration;

    /// Many datagrams on several sockets, queued across more than one arena's
    /// worth (so a mid-tick flush happens), arrive all, each socket's in order.
    #[test]
    fn queued_packets_arrive_complete_and_in_order() {
        let Ok(mut ring) = SendRing::<u32>::new(8) else {
            // A sandbox (seccomp) without io_uring: the engine falls back to sendmsg.
            eprintln!("io_uring unavailable here; nothing to test");
            return;
        };
        let rx: Vec<std::net::UdpSocket> = (0..3)
            .map(|_| std::net::UdpSocket::bind("127.0.0.1:0").unwrap())
            .collect();
        let tx: Vec<std::net::UdpSocket> = (0..3)
            .map(|_| std::net::UdpSocket::bind("127.0.0.1:0").unwrap())
            .collect();
        const PER_SOCKET: u32 = 40;
        for n in 0..PER_SOCKET {
            for (i, (tx, rx)) in tx.iter().zip(&rx).enumerate() {
                let header = n.to_be_bytes();
                let payload = [i as u8; 160];
                ring.queue(
                    tx.as_raw_fd(),
                    &header,
                    &payload,
                    rx.local_addr().unwrap(),
                    n,
                );
            }
            if n % 16 == 15 {
                assert!(ring.flush().is_empty());
            }
        }
        assert!(ring.flush().is_empty());
        for (i, rx) in rx.iter().enumerate() {
            rx.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
            for n in 0..PER_SOCKET {
                let mut buf = [0u8; 256];
                let got = rx.recv(&mut buf).unwrap();
                assert_eq!(got, 164);
                assert_eq!(&buf[..4], &n.to_be_bytes(), "socket {i} out of order");
                assert!(buf[4..got].iter().all(|&b| b == i as u8));
            }
        }
    }

    /// A send the kernel refuses (here: to no descriptor) comes back
    /// from `flush` with its tag, and the others still go out.
    #[test]
    fn failed_sends_come_back_with_their_tag() {
        let Ok(mut ring) = SendRing::<u32>::new(4) else {
            eprintln!("io_uring unavailable here; nothing to test");
            return;
        };
        let rx = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let tx = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let to = rx.local_addr().unwrap();
        // Not a descriptor at all (a closed one could be reused by a parallel test).
        let closed = -1;
        ring.queue(tx.as_raw_fd(), b"ok-1", b"", to, 1);
        ring.queue(closed, b"lost", b"", to, 2);
        ring.queue(tx.as_raw_fd(), b"ok-3", b"", to, 3);
        let failed = ring.flush();
        assert_eq!(failed.len(), 1);
        assert_eq!(failed[0].0, 2);
        assert_eq!(failed[0].1.raw_os_error(), Some(libc::EBADF));
        rx.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut buf = [0u8; 16];
        let n = rx.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"ok-1");
        let n = rx.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"ok-3");
    }
}
