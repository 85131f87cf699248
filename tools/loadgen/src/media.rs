//! The load generator's RTP side, on one thread: every caller shares one RTP
//! socket and every operator another (streams are told apart by courtline's
//! source port), packets are received with `recvmmsg` and kernel arrival
//! timestamps, and bridged legs send paced audio with `sendmmsg`.

use std::net::{SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::sync::mpsc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;

use super::stats::{Histogram, Summary};
use courtline::switchboard::media::batch::{RecvBatch, SendBatch};
use courtline::switchboard::media::codec::Codec;
use courtline::switchboard::media::prompt::Playlist;

/// Packet interval of G.711 at 20 ms.
const FRAME_NS: i128 = 20_000_000;
/// Datagrams per system call.
const BATCH: usize = 64;
/// Marks an unused entry of a port table.
const NO_CALL: u32 = u32::MAX;

/// What the SIP side tells the media thread.
#[derive(Debug)]
pub enum MediaOrder {
    /// A caller was answered: measure what courtline sends it from `courtline`;
    /// `ack_ns` (CLOCK_REALTIME) is when the ACK went out.
    WatchCaller {
        /// Call index.
        call: u32,
        /// Courtline's RTP address for this caller.
        courtline: SocketAddr,
        /// When the ACK was sent.
        ack_ns: i128,
    },
    /// An operator leg answered: measure what courtline relays to it.
    WatchOperator {
        /// Call index.
        call: u32,
        /// Courtline's RTP address for this operator leg.
        courtline: SocketAddr,
    },
    /// Bridged: caller and operator both start sending audio.
    Talk {
        /// Call index.
        call: u32,
    },
    /// The call is over: fold its streams into the totals.
    Forget {
        /// Call index.
        call: u32,
    },
    /// Stop and report.
    Finish(mpsc::Sender<MediaReport>),
}

/// Totals over every stream of the run.
#[derive(Debug, Clone, Default, Serialize)]
pub struct MediaReport {
    /// Streams courtline sent to callers.
    pub caller_streams: u64,
    /// Streams courtline relayed to operators.
    pub operator_streams: u64,
    /// RTP packets received from courtline.
    pub packets_received: u64,
    /// Packets missing from sequence numbers.
    pub packets_lost: u64,
    /// Inter-arrival deviation from 20 ms on caller streams (prompt, ringback, relay).
    pub caller_deviation: Summary,
    /// Inter-arrival deviation from 20 ms on streams relayed to operators.
    pub operator_deviation: Summary,
    /// Time from ACK to the first prompt packet.
    pub first_packet_after_ack: Summary,
    /// Prompt frames compared with the expected encoding.
    pub prompt_frames_checked: u64,
    /// Of those, frames that differed.
    pub prompt_frames_wrong: u64,
    /// Caller streams that received every prompt frame, byte-exact and in order.
    pub prompts_complete: u64,
    /// Caller streams whose first prompt packet was lost, so frames could not be checked.
    pub prompts_unanchored: u64,
    /// Packets from ports that belong to no known call (late or stray).
    pub stray_packets: u64,
    /// Packets the load generator sent (bridged calls).
    pub packets_sent: u64,
    /// Packets the load generator could not send (socket buffer full).
    pub send_dropped: u64,
}

/// Measurements of one received stream.
#[derive(Debug, Default)]
struct StreamRx {
    /// Last sequence number seen and its extended (unwrapped) offset from the first.
    last_seq: u16,
    /// Extended offset of `last_seq`.
    last_ext: i64,
    /// Highest extended offset seen.
    max_ext: i64,
    /// Packets received.
    received: u64,
    /// Arrival of the previous packet (ns, CLOCK_REALTIME).
    last_arrival_ns: i128,
    /// Prompt frames that matched, in order.
    prompt_ok: u64,
    /// When the ACK went out; first-packet latency is measured from it.
    ack_ns: Option<i128>,
    /// Whether the first packet received was the prompt's first (marker set),
    /// so sequence offsets are frame indices; otherwise frames are not checked.
    anchored: bool,
}

/// An outgoing paced stream of the load generator (a caller's or operator's voice).
#[derive(Debug, Clone, Copy)]
struct StreamTx {
    /// Where courtline expects it.
    to: SocketAddr,
    /// Our SSRC.
    ssrc: u32,
    /// Next sequence number.
    seq: u16,
    /// Next timestamp.
    ts: u32,
}

/// Media state of one call.
#[derive(Debug, Default)]
struct CallMedia {
    /// What courtline sends the caller.
    caller_rx: Option<StreamRx>,
    /// What courtline relays to the operator.
    operator_rx: Option<StreamRx>,
    /// The caller's voice, once bridged.
    caller_tx: Option<StreamTx>,
    /// The operator's voice, once bridged.
    operator_tx: Option<StreamTx>,
    /// Courtline's port for each leg, for cleaning the port tables.
    ports: [Option<u16>; 2],
}

/// The media thread's state.
struct MediaThread {
    /// Every caller's RTP socket.
    caller_socket: UdpSocket,
    /// Every operator's RTP socket.
    operator_socket: UdpSocket,
    /// Expected prompt frames.
    prompt: Arc<Playlist>,
    /// Negotiated law.
    codec: Codec,
    /// Calls by index.
    calls: Vec<CallMedia>,
    /// Courtline's caller-leg port → call.
    caller_ports: Vec<u32>,
    /// Courtline's operator-leg port → call.
    operator_ports: Vec<u32>,
    /// Talking calls by the millisecond (mod 20) they send in.
    wheel: [Vec<u32>; 20],
    /// Deviation on caller streams.
    caller_deviation: Histogram,
    /// Deviation on operator streams.
    operator_deviation: Histogram,
    /// First packet after ACK.
    first_packet: Histogram,
    /// Totals.
    report: MediaReport,
}

/// Starts the media thread; returns where to send orders and its handle.
pub fn spawn(
    caller_socket: UdpSocket,
    operator_socket: UdpSocket,
    prompt: Arc<Playlist>,
    codec: Codec,
    calls: usize,
) -> std::io::Result<(mpsc::Sender<MediaOrder>, std::thread::JoinHandle<()>)> {
    for s in [&caller_socket, &operator_socket] {
        courtline::switchboard::media::batch::enable_receive_timestamps(s.as_raw_fd())?;
        courtline::switchboard::media::batch::set_buffer_sizes(s.as_raw_fd(), 16 << 20)?;
        s.set_nonblocking(true)?;
    }
    let (tx, rx) = mpsc::channel();
    let mut thread = MediaThread {
        caller_socket,
        operator_socket,
        prompt,
        codec,
        calls: (0..calls).map(|_| CallMedia::default()).collect(),
        caller_ports: vec![NO_CALL; 65536],
        operator_ports: vec![NO_CALL; 65536],
        wheel: Default::default(),
        caller_deviation: Histogram::new(),
        operator_deviation: Histogram::new(),
        first_packet: Histogram::new(),
        report: MediaReport::default(),
    };
    let handle = std::thread::Builder::new()
        .name("loadgen-media".into())
        .spawn(move || thread.run(rx))?;
    Ok((tx, handle))
}

impl MediaThread {
    fn run(&mut self, orders: mpsc::Receiver<MediaOrder>) {
        let mut inbound = RecvBatch::new(BATCH);
        let mut to_courtline_from_callers = SendBatch::new(BATCH);
        let mut to_courtline_from_operators = SendBatch::new(BATCH);
        let start = Instant::now();
        let mut sent_through_ms: u64 = 0;
        loop {
            loop {
                match orders.try_recv() {
                    Ok(MediaOrder::Finish(reply)) => {
                        let _ = reply.send(self.finish());
                        return;
                    }
                    Ok(order) => self.apply(order),
                    Err(mpsc::TryRecvError::Empty) => break,
                    Err(mpsc::TryRecvError::Disconnected) => return,
                }
            }
            let mut busy = false;
            for leg in [Leg::Caller, Leg::Operator] {
                let fd = match leg {
                    Leg::Caller => self.caller_socket.as_raw_fd(),
                    Leg::Operator => self.operator_socket.as_raw_fd(),
                };
                let n = inbound.recv(fd).unwrap_or(0);
                busy |= n > 0;
                for i in 0..n {
                    if let Some(p) = inbound.get(i) {
                        let arrived = p.arrived_ns.unwrap_or_else(realtime_ns);
                        self.on_packet(leg, p.from, p.data, arrived);
                    }
                }
            }
            let now_ms = start.elapsed().as_millis() as u64;
            while sent_through_ms < now_ms {
                sent_through_ms += 1;
                self.send_bucket(
                    (sent_through_ms % 20) as usize,
                    &mut to_courtline_from_callers,
                    &mut to_courtline_from_operators,
                );
            }
            self.flush(
                &mut to_courtline_from_callers,
                &mut to_courtline_from_operators,
            );
            if !busy {
                let next = start + Duration::from_millis(sent_through_ms + 1);
                wait_readable(
                    &[
                        self.caller_socket.as_raw_fd(),
                        self.operator_socket.as_raw_fd(),
                    ],
                    next.saturating_duration_since(Instant::now()),
                );
            }
        }
    }

    fn apply(&mut self, order: MediaOrder) {
        match order {
            MediaOrder::WatchCaller {
                call,
                courtline,
                ack_ns,
            } => {
                if let Some(c) = self.calls.get_mut(call as usize) {
                    c.caller_rx = Some(StreamRx {
                        ack_ns: Some(ack_ns),
                        ..StreamRx::default()
                    });
                    c.caller_tx = Some(StreamTx::new(courtline));
                    c.ports[0] = Some(courtline.port());
                    self.caller_ports[usize::from(courtline.port())] = call;
                    self.report.caller_streams += 1;
                }
            }
            MediaOrder::WatchOperator { call, courtline } => {
                if let Some(c) = self.calls.get_mut(call as usize) {
                    c.operator_rx = Some(StreamRx::default());
                    c.operator_tx = Some(StreamTx::new(courtline));
                    c.ports[1] = Some(courtline.port());
                    self.operator_ports[usize::from(courtline.port())] = call;
                    self.report.operator_streams += 1;
                }
            }
            MediaOrder::Talk { call } => {
                // Phase chosen from the call index so talkers spread over the 20 ms.
                self.wheel[call as usize % 20].push(call);
            }
            MediaOrder::Forget { call } => self.forget(call),
            MediaOrder::Finish(_) => {}
        }
    }

    fn forget(&mut self, call: u32) {
        let Some(c) = self.calls.get_mut(call as usize) else {
            return;
        };
        let frames = self.prompt.frame_count() as u64;
        for (rx, table, port) in [
            (c.caller_rx.take(), &mut self.caller_ports, c.ports[0]),
            (c.operator_rx.take(), &mut self.operator_ports, c.ports[1]),
        ] {
            if let Some(port) = port {
                if table[usize::from(port)] == call {
                    table[usize::from(port)] = NO_CALL;
                }
            }
            if let Some(rx) = rx {
                if rx.received > 0 {
                    let expected = (rx.max_ext + 1) as u64;
                    self.report.packets_lost += expected.saturating_sub(rx.received);
                }
                if rx.ack_ns.is_some() && rx.prompt_ok == frames {
                    self.report.prompts_complete += 1;
                }
            }
        }
        c.caller_tx = None;
        c.operator_tx = None;
        c.ports = [None, None];
    }

    fn on_packet(&mut self, leg: Leg, from: SocketAddr, data: &[u8], arrived_ns: i128) {
        let table = match leg {
            Leg::Caller => &self.caller_ports,
            Leg::Operator => &self.operator_ports,
        };
        let call = table[usize::from(from.port())];
        let Some(c) = self.calls.get_mut(call as usize) else {
            self.report.stray_packets += 1;
            return;
        };
        let rx = match leg {
            Leg::Caller => c.caller_rx.as_mut(),
            Leg::Operator => c.operator_rx.as_mut(),
        };
        let Some(rx) = rx else {
            self.report.stray_packets += 1;
            return;
        };
        if data.len() < 12 || data[0] >> 6 != 2 {
            return;
        }
        let marker = data[1] & 0x80 != 0;
        let seq = u16::from_be_bytes([data[2], data[3]]);
        self.report.packets_received += 1;
        if rx.received == 0 {
            rx.anchored = marker;
            if !marker && rx.ack_ns.is_some() {
                self.report.prompts_unanchored += 1;
            }
            rx.last_seq = seq;
            if let Some(ack) = rx.ack_ns {
                self.first_packet
                    .record_ns(u64::try_from(arrived_ns - ack).unwrap_or(0));
            }
        } else {
            let ext = rx.last_ext + i64::from(seq.wrapping_sub(rx.last_seq) as i16);
            let step = ext - rx.last_ext;
            if step >= 1 && !marker {
                let gap = arrived_ns - rx.last_arrival_ns;
                let deviation = (gap - FRAME_NS * i128::from(step)).unsigned_abs();
                let histogram = match leg {
                    Leg::Caller => &mut self.caller_deviation,
                    Leg::Operator => &mut self.operator_deviation,
                };
                histogram.record_ns(u64::try_from(deviation).unwrap_or(u64::MAX));
            }
            rx.last_ext = ext;
            rx.last_seq = seq;
            rx.max_ext = rx.max_ext.max(ext);
        }
        rx.received += 1;
        rx.last_arrival_ns = arrived_ns;
        if leg == Leg::Caller && rx.anchored {
            let index = rx.last_ext;
            if index >= 0 && (index as usize) < self.prompt.frame_count() {
                self.report.prompt_frames_checked += 1;
                let expected = self.prompt.frame(self.codec, index as usize);
                if &data[12..] == expected {
                    rx.prompt_ok += 1;
                } else {
                    self.report.prompt_frames_wrong += 1;
                }
            }
        }
    }

    fn send_bucket(&mut self, bucket: usize, callers: &mut SendBatch, operators: &mut SendBatch) {
        let pt = self.codec.payload_type();
        let mut i = 0;
        while i < self.wheel[bucket].len() {
            let call = self.wheel[bucket][i];
            let Some(c) = self.calls.get_mut(call as usize) else {
                self.wheel[bucket].swap_remove(i);
                continue;
            };
            if c.caller_tx.is_none() && c.operator_tx.is_none() {
                self.wheel[bucket].swap_remove(i);
                continue;
            }
            for (tx, batch, fd) in [
                (
                    &mut c.caller_tx,
                    &mut *callers,
                    self.caller_socket.as_raw_fd(),
                ),
                (
                    &mut c.operator_tx,
                    &mut *operators,
                    self.operator_socket.as_raw_fd(),
                ),
            ] {
                if let Some(tx) = tx {
                    if batch.is_full() {
                        let f = batch.flush(fd);
                        self.report.packets_sent += f.sent as u64;
                        self.report.send_dropped += f.dropped as u64;
                    }
                    batch.push(tx.to, |buf| tx.write(buf, pt));
                }
            }
            i += 1;
        }
    }

    fn flush(&mut self, callers: &mut SendBatch, operators: &mut SendBatch) {
        for (batch, fd) in [
            (callers, self.caller_socket.as_raw_fd()),
            (operators, self.operator_socket.as_raw_fd()),
        ] {
            if !batch.is_empty() {
                let f = batch.flush(fd);
                self.report.packets_sent += f.sent as u64;
                self.report.send_dropped += f.dropped as u64;
            }
        }
    }

    fn finish(&mut self) -> MediaReport {
        for call in 0..self.calls.len() as u32 {
            self.forget(call);
        }
        let mut report = self.report.clone();
        report.caller_deviation = self.caller_deviation.summary();
        report.operator_deviation = self.operator_deviation.summary();
        report.first_packet_after_ack = self.first_packet.summary();
        report
    }
}

/// Which side of the call a packet arrived on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Leg {
    /// On the callers' socket.
    Caller,
    /// On the operators' socket.
    Operator,
}

impl StreamTx {
    fn new(to: SocketAddr) -> StreamTx {
        StreamTx {
            to,
            ssrc: rand::random(),
            seq: rand::random(),
            ts: rand::random(),
        }
    }

    /// Writes the next packet (header and a fixed voice-like payload).
    fn write(&mut self, buf: &mut [u8], payload_type: u8) -> usize {
        buf[0] = 0x80;
        buf[1] = payload_type;
        buf[2..4].copy_from_slice(&self.seq.to_be_bytes());
        buf[4..8].copy_from_slice(&self.ts.to_be_bytes());
        buf[8..12].copy_from_slice(&self.ssrc.to_be_bytes());
        buf[12..172].fill(0x55);
        self.seq = self.seq.wrapping_add(1);
        self.ts = self.ts.wrapping_add(160);
        172
    }
}

/// Now as CLOCK_REALTIME nanoseconds (the clock of kernel receive timestamps).
pub fn realtime_ns() -> i128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as i128)
}

/// Waits until one of `fds` is readable or `timeout` passes (µs precision).
pub fn wait_readable(fds: &[std::os::fd::RawFd], timeout: Duration) {
    let mut pollfds = [libc::pollfd {
        fd: -1,
        events: 0,
        revents: 0,
    }; 4];
    let n = fds.len().min(pollfds.len());
    for (p, &fd) in pollfds.iter_mut().zip(fds) {
        *p = libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        };
    }
    let ts = libc::timespec {
        tv_sec: timeout.as_secs() as libc::time_t,
        tv_nsec: timeout.subsec_nanos() as libc::c_long,
    };
    // SAFETY: `pollfds[..n]` and `ts` are valid for the call.
    unsafe {
        libc::ppoll(
            pollfds.as_mut_ptr(),
            n as libc::nfds_t,
            &ts,
            std::ptr::null(),
        );
    }
}
