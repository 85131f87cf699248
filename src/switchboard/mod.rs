//! The switchboard: SIP endpoint, call flow, media, and the spool that hands
//! call events on to the records service.

pub(crate) mod admission;
pub mod call;
pub(crate) mod context;
pub mod delivery;
pub mod endpoint;
pub mod media;
pub mod sdp;
pub mod sip;

pub use endpoint::{Switchboard, SwitchboardError};
