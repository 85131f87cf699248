//! Media: G.711 coding, pre-encoded prompt and tone frames, and the engine that
//! paces and relays RTP (with RTCP) for every call. Runs in the switchboard
//! process; imports neither `sip` nor `call`.

pub mod batch;
pub mod codec;
pub mod dtmf;
pub mod engine;
pub mod g722;
pub mod heard;
pub mod pacer;
pub mod ports;
pub mod prompt;
pub mod recording;
pub mod rtcp;
pub mod session;
pub mod spare_files;
pub mod stream;
mod sys;
pub mod tone;
mod uring;
