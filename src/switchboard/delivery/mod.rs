//! Delivery of call events: the durable spool and the sender that drains it
//! into the records service.

pub mod sender;
pub mod spool;
