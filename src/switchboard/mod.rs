//! The switchboard process: SIP endpoint, call flow, media, and the spool that
//! hands call events on to the records service.
//!
//! [`endpoint`] accepts calls and hands each to a [`call::session`]; both share
//! the `context` below them. Imports go one way: `endpoint` → `call` →
//! `sip`, `media`, `sdp`, `delivery`, `context`; of the whole crate only
//! `config` and `contract`.

pub(crate) mod admission;
pub(crate) mod burst;
pub mod call;
pub(crate) mod context;
pub mod delivery;
pub mod endpoint;
pub mod health;
pub mod live;
pub mod media;
pub mod metrics;
pub mod priority;
pub mod sdp;
pub mod sip;

pub use endpoint::{Switchboard, SwitchboardError};
