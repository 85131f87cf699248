//! Call records: the gRPC contract, the durable spool and event sender on the
//! switchboard side, and the records service with its hash chain.
//!
//! Switchboard side: the call flow's milestones and final record go through
//! [`client::RecordSender`] into the [`spool`] (fsync'd) and on to the service.
//! Service side: [`service`] authorises ([`auth`]) and hands events to the
//! [`ledger`], which chains them ([`chain`]), signs checkpoints ([`signing`]) and
//! commits them with their effect on the per-call rows to a [`store::Store`].
//! [`verify`] recomputes all of it; [`export`] writes and checks self-verifying
//! export files; [`query`] formats records for people and spreadsheets.

/// Code generated from `proto/courtline/records/v1/records.proto`: the wire contract.
#[allow(missing_docs)]
pub mod pb {
    tonic::include_proto!("courtline.records.v1");

    /// The encoded proto descriptors, served by gRPC reflection.
    pub const FILE_DESCRIPTOR_SET: &[u8] =
        tonic::include_file_descriptor_set!("records_descriptor");
}

pub mod auth;
pub mod chain;
pub mod client;
pub mod export;
pub mod ledger;
pub mod query;
pub mod service;
pub mod signing;
pub mod spool;
pub mod store;
pub mod verify;
