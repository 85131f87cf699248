//! Thin, safe wrappers over the Linux primitives the media engine runs on:
//! epoll, timerfd, eventfd, and `sendmsg` of a header plus a shared payload.

use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::time::Duration;

fn check(rc: libc::c_int) -> io::Result<libc::c_int> {
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(rc)
    }
}

/// An epoll instance; events carry a caller-chosen `u64` token.
pub struct Epoll {
    /// The epoll descriptor.
    fd: OwnedFd,
}

impl Epoll {
    /// A new epoll instance (close-on-exec).
    pub fn new() -> io::Result<Epoll> {
        // SAFETY: plain system call; the result is a fresh descriptor we own.
        let fd = check(unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) })?;
        // SAFETY: `fd` was just returned by the kernel and is owned by nobody else.
        Ok(Epoll {
            fd: unsafe { OwnedFd::from_raw_fd(fd) },
        })
    }

    /// Watches `fd` for readability (level-triggered), reporting `token`.
    pub fn add(&self, fd: RawFd, token: u64) -> io::Result<()> {
        let mut ev = libc::epoll_event {
            events: libc::EPOLLIN as u32,
            u64: token,
        };
        // SAFETY: `ev` is valid for the call.
        check(unsafe { libc::epoll_ctl(self.fd.as_raw_fd(), libc::EPOLL_CTL_ADD, fd, &mut ev) })?;
        Ok(())
    }

    /// Stops watching `fd`.
    pub fn remove(&self, fd: RawFd) {
        let mut ev = libc::epoll_event { events: 0, u64: 0 };
        // SAFETY: `ev` is valid for the call; failure (not watched) is harmless.
        unsafe {
            libc::epoll_ctl(self.fd.as_raw_fd(), libc::EPOLL_CTL_DEL, fd, &mut ev);
        }
    }

    /// Waits for events (up to `events.len()`), at most `timeout`; returns the tokens.
    pub fn wait<'a>(
        &self,
        events: &'a mut [libc::epoll_event],
        timeout: Duration,
    ) -> impl Iterator<Item = u64> + 'a {
        let ms = i32::try_from(timeout.as_millis()).unwrap_or(i32::MAX);
        // SAFETY: the kernel writes at most `events.len()` entries.
        let n = unsafe {
            libc::epoll_wait(
                self.fd.as_raw_fd(),
                events.as_mut_ptr(),
                i32::try_from(events.len()).unwrap_or(i32::MAX),
                ms,
            )
        };
        let n = usize::try_from(n).unwrap_or(0);
        events[..n].iter().map(|e| e.u64)
    }
}

/// A monotonic timer descriptor, readable when it expires.
pub struct TimerFd {
    /// The timer descriptor.
    fd: OwnedFd,
}

impl TimerFd {
    /// A new, disarmed, non-blocking timer on CLOCK_MONOTONIC.
    pub fn new() -> io::Result<TimerFd> {
        // SAFETY: plain system call.
        let fd = check(unsafe {
            libc::timerfd_create(
                libc::CLOCK_MONOTONIC,
                libc::TFD_NONBLOCK | libc::TFD_CLOEXEC,
            )
        })?;
        // SAFETY: fresh descriptor owned by us.
        Ok(TimerFd {
            fd: unsafe { OwnedFd::from_raw_fd(fd) },
        })
    }

    /// The descriptor, for epoll.
    pub fn raw(&self) -> RawFd {
        self.fd.as_raw_fd()
    }

    /// Fires once after `after` (at least 1 ns: zero would disarm).
    pub fn arm(&self, after: Duration) {
        let after = after.max(Duration::from_nanos(1));
        let spec = libc::itimerspec {
            it_interval: libc::timespec {
                tv_sec: 0,
                tv_nsec: 0,
            },
            it_value: libc::timespec {
                tv_sec: after.as_secs() as libc::time_t,
                tv_nsec: after.subsec_nanos() as libc::c_long,
            },
        };
        // SAFETY: `spec` is valid for the call.
        unsafe {
            libc::timerfd_settime(self.fd.as_raw_fd(), 0, &spec, std::ptr::null_mut());
        }
    }

    /// Clears the expiry count after it fired.
    pub fn acknowledge(&self) {
        drain_counter(self.fd.as_raw_fd());
    }
}

/// An eventfd: other threads wake the engine by writing to it.
pub struct EventFd {
    /// The event descriptor.
    fd: OwnedFd,
}

impl EventFd {
    /// A new non-blocking eventfd.
    pub fn new() -> io::Result<EventFd> {
        // SAFETY: plain system call.
        let fd = check(unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) })?;
        // SAFETY: fresh descriptor owned by us.
        Ok(EventFd {
            fd: unsafe { OwnedFd::from_raw_fd(fd) },
        })
    }

    /// The descriptor, for epoll.
    pub fn raw(&self) -> RawFd {
        self.fd.as_raw_fd()
    }

    /// Makes the descriptor readable.
    pub fn signal(&self) {
        let one: u64 = 1;
        // SAFETY: writes 8 bytes from a valid u64.
        unsafe {
            libc::write(self.fd.as_raw_fd(), (&one as *const u64).cast(), 8);
        }
    }

    /// Resets it after it was seen readable.
    pub fn acknowledge(&self) {
        drain_counter(self.fd.as_raw_fd());
    }
}

fn drain_counter(fd: RawFd) {
    let mut count: u64 = 0;
    // SAFETY: reads 8 bytes into a valid u64; EAGAIN when already drained is fine.
    unsafe {
        libc::read(fd, (&mut count as *mut u64).cast(), 8);
    }
}

/// Sends one datagram made of `header` then `payload` (no copy into a packet
/// buffer: the shared payload is handed to the kernel as it is).
pub fn send_parts(fd: RawFd, header: &[u8], payload: &[u8], to: SocketAddr) -> io::Result<()> {
    // SAFETY: all-zero is a valid sockaddr_storage and msghdr.
    let mut addr: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let addr_len = super::batch::std_to_sockaddr(to, &mut addr);
    let mut iov = [
        libc::iovec {
            iov_base: header.as_ptr() as *mut libc::c_void,
            iov_len: header.len(),
        },
        libc::iovec {
            iov_base: payload.as_ptr() as *mut libc::c_void,
            iov_len: payload.len(),
        },
    ];
    // SAFETY: as above.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_name = (&mut addr as *mut libc::sockaddr_storage).cast();
    msg.msg_namelen = addr_len;
    msg.msg_iov = iov.as_mut_ptr();
    msg.msg_iovlen = 2;
    // SAFETY: every pointer in `msg` is valid for the call; the kernel only reads them.
    let n = unsafe { libc::sendmsg(fd, &msg, libc::MSG_DONTWAIT) };
    if n < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    #[test]
    fn epoll_reports_timer_eventfd_and_socket() {
        let epoll = Epoll::new().unwrap();
        let timer = TimerFd::new().unwrap();
        let wake = EventFd::new().unwrap();
        let rx = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let tx = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        epoll.add(timer.raw(), 1).unwrap();
        epoll.add(wake.raw(), 2).unwrap();
        epoll.add(rx.as_raw_fd(), 3).unwrap();
        let mut events = [libc::epoll_event { events: 0, u64: 0 }; 8];

        let start = Instant::now();
        timer.arm(Duration::from_millis(5));
        let got: Vec<u64> = epoll.wait(&mut events, Duration::from_secs(1)).collect();
        assert_eq!(got, vec![1]);
        assert!(start.elapsed() >= Duration::from_millis(5));
        timer.acknowledge();

        wake.signal();
        let got: Vec<u64> = epoll.wait(&mut events, Duration::from_secs(1)).collect();
        assert_eq!(got, vec![2]);
        wake.acknowledge();

        send_parts(tx.as_raw_fd(), b"head", b"body", rx.local_addr().unwrap()).unwrap();
        let got: Vec<u64> = epoll.wait(&mut events, Duration::from_secs(1)).collect();
        assert_eq!(got, vec![3]);
        let mut buf = [0u8; 16];
        let (n, _) = rx.recv_from(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"headbody");
        epoll.remove(rx.as_raw_fd());
        assert_eq!(epoll.wait(&mut events, Duration::ZERO).count(), 0);
    }
}
