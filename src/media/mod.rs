//! Media: G.711 coding, pre-encoded prompt and tone frames, RTP pacing and relay.

pub mod codec;
pub mod dtmf;
pub mod pacer;
pub mod ports;
pub mod prompt;
pub mod session;
pub mod stream;
pub mod tone;
