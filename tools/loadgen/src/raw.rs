//! The raw loopback limit of this machine: one thread sends 172-byte UDP
//! datagrams (an RTP G.711 packet) with `sendmmsg` as fast as it can, another
//! receives them with `recvmmsg`. Media results are reported as a fraction of it.

use std::net::UdpSocket;
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;

use super::media::wait_readable;
use courtline::switchboard::media::batch::{set_buffer_sizes, RecvBatch, SendBatch};

/// Size of an RTP packet carrying 20 ms of G.711.
pub const PACKET_LEN: usize = 172;

/// Measured loopback capacity.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct RawLimit {
    /// Datagrams per second the sender got into the kernel.
    pub sent_pps: f64,
    /// Datagrams per second that arrived: the limit.
    pub received_pps: f64,
    /// The same as 20 ms G.711 streams (50 packets/s each).
    pub streams: f64,
}

impl std::fmt::Display for RawLimit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "raw loopback limit (172-byte UDP, batched): {:.0} packets/s received ({:.0} sent) = {:.0} G.711 streams",
            self.received_pps, self.sent_pps, self.streams
        )
    }
}

/// Runs sender and receiver for `duration` and reports the rates.
pub fn measure(duration: Duration) -> std::io::Result<RawLimit> {
    let rx = UdpSocket::bind("127.0.0.1:0")?;
    let tx = UdpSocket::bind("127.0.0.1:0")?;
    set_buffer_sizes(rx.as_raw_fd(), 4 << 20)?;
    let to = rx.local_addr()?;
    let stop = Arc::new(AtomicBool::new(false));
    let receiver = {
        let stop = stop.clone();
        std::thread::Builder::new()
            .name("raw-recv".into())
            .spawn(move || {
                let mut batch = RecvBatch::new(64);
                let mut received = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    match batch.recv(rx.as_raw_fd()) {
                        Ok(0) => wait_readable(&[rx.as_raw_fd()], Duration::from_millis(10)),
                        Ok(n) => received += n as u64,
                        Err(_) => break,
                    }
                }
                received
            })?
    };
    let sender = {
        let stop = stop.clone();
        std::thread::Builder::new()
            .name("raw-send".into())
            .spawn(move || {
                let mut batch = SendBatch::new(64);
                let mut sent = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    while batch.push(to, |buf| {
                        buf[..PACKET_LEN].fill(0x55);
                        buf[0] = 0x80;
                        PACKET_LEN
                    }) {}
                    sent += batch.flush(tx.as_raw_fd()).sent as u64;
                }
                sent
            })?
    };
    let start = Instant::now();
    std::thread::sleep(duration);
    stop.store(true, Ordering::Relaxed);
    let seconds = start.elapsed().as_secs_f64();
    let sent = sender.join().unwrap_or(0);
    let received = receiver.join().unwrap_or(0);
    let received_pps = received as f64 / seconds;
    Ok(RawLimit {
        sent_pps: sent as f64 / seconds,
        received_pps,
        streams: received_pps / 50.0,
    })
}
