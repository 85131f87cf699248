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
//!
//! The sockets that send paced packets are registered in the ring's file
//! table ([`SendRing::register`]): their entries name a table slot
//! (`IOSQE_FIXED_FILE`), which spares the kernel looking the descriptor up and
//! taking a reference on it for every packet. A registered socket stays open
//! in the table after its descriptor is closed, so every slot must be
//! [released](SendRing::release) when its socket goes, or its port stays bound.

use std::io;
use std::net::SocketAddr;
use std::os::fd::RawFd;

use io_uring::{opcode, types, IoUring};

/// Largest packet the arena holds (RTP header plus a 20 ms frame fits many times).
const MAX_PACKET: usize = 512;
/// Slots of the first file table; it doubles whenever it is full.
const FIRST_TABLE_SLOTS: usize = 64;

/// A socket's slot in the ring's file table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileSlot(u32);

/// The ring's registered file table as courtline keeps it.
#[derive(Debug, Default)]
struct FileTable {
    /// The descriptor in each slot (-1: empty); as long as the table the kernel holds.
    fds: Vec<RawFd>,
    /// Empty slots, used before the table grows.
    free: Vec<u32>,
    /// Set when the kernel refused a table (too old, or a limit): from then on
    /// every packet names its descriptor, and slots handed out earlier are
    /// ignored (but still released while a table holds them).
    refused: bool,
}

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
    /// Which socket is in which slot of the ring's file table.
    files: FileTable,
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
            files: FileTable::default(),
        })
    }

    /// Puts `fd` into the ring's file table, so that packets queued with the
    /// slot skip the per-packet descriptor lookup; None when the kernel takes
    /// no table (packets then name `fd`). The table doubles when it is full.
    /// The slot must be [released](SendRing::release) before `fd` is closed.
    pub fn register(&mut self, fd: RawFd) -> Option<FileSlot> {
        if self.files.refused {
            return None;
        }
        if self.files.free.is_empty() {
            self.grow_table();
        }
        let slot = self.files.free.pop()?;
        match self.ring.submitter().register_files_update(slot, &[fd]) {
            Ok(_) => {
                self.files.fds[slot as usize] = fd;
                Some(FileSlot(slot))
            }
            Err(e) => {
                self.files.free.push(slot);
                tracing::warn!(
                    "io_uring: registering RTP socket {fd} failed ({e}); its packets name the descriptor instead"
                );
                None
            }
        }
    }

    /// Empties `slot` (the socket closes once its descriptor is closed too)
    /// and keeps it for the next socket. Packets still queued are sent first.
    pub fn release(&mut self, slot: FileSlot) {
        let FileSlot(index) = slot;
        if self.files.fds.get(index as usize).is_none_or(|&fd| fd < 0) {
            // No table holds it (one refused on growing was dropped whole).
            return;
        }
        self.flush_into_failed();
        if let Err(e) = self.ring.submitter().register_files_update(index, &[-1]) {
            // Not expected for a slot we filled; the table entry then keeps the
            // socket (and its port) until the slot is filled again.
            tracing::warn!("io_uring: releasing file slot {index} failed: {e}");
        }
        self.files.fds[index as usize] = -1;
        self.files.free.push(index);
    }

    /// Registers a table twice as large (the first one at
    /// [`FIRST_TABLE_SLOTS`]) holding the same sockets in the same slots.
    fn grow_table(&mut self) {
        self.flush_into_failed();
        let old_len = self.files.fds.len();
        let new_len = (old_len * 2).max(FIRST_TABLE_SLOTS);
        let mut fds = self.files.fds.clone();
        fds.resize(new_len, -1);
        let submitter = self.ring.submitter();
        if old_len > 0 {
            if let Err(e) = submitter.unregister_files() {
                // The old table stays, with its sockets, until they are released.
                tracing::warn!(
                    "io_uring: the file table could not grow past {old_len} slots ({e}); new RTP sockets are named by their descriptors"
                );
                self.files.refused = true;
                return;
            }
        }
        match submitter.register_files(&fds) {
            Ok(()) => {
                self.files.fds = fds;
                // Lowest slots first, so a small table stays dense.
                self.files
                    .free
                    .extend((old_len as u32..new_len as u32).rev());
            }
            Err(e) => {
                tracing::warn!(
                    "io_uring: no file table of {new_len} slots ({e}); RTP packets name their sockets' descriptors instead"
                );
                // No table at all now: the sockets it held are free, and
                // their slots are ignored from here on.
                self.files.fds.clear();
                self.files.free.clear();
                self.files.refused = true;
            }
        }
    }

    /// Queues one datagram of `header` then `payload` to `to` on `fd` (by its
    /// file table `slot` when it has one); a full arena is flushed first.
    /// `fd` must stay open until the next flush.
    pub fn queue(
        &mut self,
        (fd, slot): (RawFd, Option<FileSlot>),
        header: &[u8],
        payload: &[u8],
        to: SocketAddr,
        tag: T,
    ) {
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
        let registered = slot.filter(|_| !self.files.refused);
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
        let flags = libc::MSG_DONTWAIT as u32;
        let entry = match registered {
            Some(FileSlot(file)) => opcode::SendMsg::new(types::Fixed(file), &slot.msg)
                .flags(flags)
                .build(),
            None => opcode::SendMsg::new(types::Fd(fd), &slot.msg)
                .flags(flags)
                .build(),
        }
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
        // Two sockets send by their file table slot, the third by its descriptor.
        let slots = [
            ring.register(tx[0].as_raw_fd()),
            ring.register(tx[1].as_raw_fd()),
            None,
        ];
        assert!(slots[0].is_some() && slots[1].is_some(), "{slots:?}");
        const PER_SOCKET: u32 = 40;
        for n in 0..PER_SOCKET {
            for (i, (tx, rx)) in tx.iter().zip(&rx).enumerate() {
                let header = n.to_be_bytes();
                let payload = [i as u8; 160];
                ring.queue(
                    (tx.as_raw_fd(), slots[i]),
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

    /// Sockets registered in the ring's file table send by their slot, each
    /// from its own address; the table grows past its first size with every
    /// socket kept in its slot; a released slot goes to the next socket, and
    /// a released socket's port is free once its descriptor is closed (the
    /// table no longer holds the socket open).
    #[test]
    fn registered_sockets_send_by_slot_and_release_their_ports() {
        let Ok(mut ring) = SendRing::<u32>::new(8) else {
            eprintln!("io_uring unavailable here; nothing to test");
            return;
        };
        let bind = || std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let rx = bind();
        rx.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let to = rx.local_addr().unwrap();
        // Receives one datagram: its first four bytes and where it came from.
        let receive = || {
            let mut buf = [0u8; 16];
            let (n, from) = rx.recv_from(&mut buf).unwrap();
            assert_eq!(n, 4);
            (u32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]), from)
        };
        let mut tx: Vec<std::net::UdpSocket> = (0..FIRST_TABLE_SLOTS + 3).map(|_| bind()).collect();
        let slots: Vec<FileSlot> = tx
            .iter()
            .map(|s| {
                ring.register(s.as_raw_fd())
                    .expect("this kernel takes a file table")
            })
            .collect();
        assert_eq!(ring.files.fds.len(), 2 * FIRST_TABLE_SLOTS, "grown once");
        let mut distinct = slots.clone();
        distinct.sort_by_key(|slot| slot.0);
        distinct.dedup();
        assert_eq!(distinct.len(), slots.len(), "every socket its own slot");
        for (n, (socket, &slot)) in tx.iter().zip(&slots).enumerate() {
            let n = n as u32;
            ring.queue(
                (socket.as_raw_fd(), Some(slot)),
                &n.to_be_bytes(),
                b"",
                to,
                n,
            );
        }
        assert!(ring.flush().is_empty());
        for (n, socket) in tx.iter().enumerate() {
            assert_eq!(receive(), (n as u32, socket.local_addr().unwrap()));
        }

        let gone = tx.remove(5);
        let port = gone.local_addr().unwrap();
        ring.release(slots[5]);
        drop(gone);
        let rebound = std::net::UdpSocket::bind(port).expect("the released socket's port is free");
        assert_eq!(
            ring.register(rebound.as_raw_fd()),
            Some(slots[5]),
            "the slot is reused"
        );
        ring.queue(
            (rebound.as_raw_fd(), Some(slots[5])),
            &7u32.to_be_bytes(),
            b"",
            to,
            7,
        );
        assert!(ring.flush().is_empty());
        assert_eq!(receive(), (7, port));
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
        ring.queue((tx.as_raw_fd(), None), b"ok-1", b"", to, 1);
        ring.queue((closed, None), b"lost", b"", to, 2);
        ring.queue((tx.as_raw_fd(), None), b"ok-3", b"", to, 3);
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
