//! Call records: the gRPC contract, the SQLite store, the records service and the
//! switchboard's client.
//!
//! The switchboard fills a [`pb::CallRecord`] when a call ends and hands it to a
//! [`client::RecordSender`]; the records service ([`service`]) stores it through
//! [`store::CallStore`]; `courtline calls list` reads it back and formats it with
//! [`query`].

/// Code generated from `proto/courtline/records/v1/records.proto`: the wire contract.
#[allow(missing_docs)]
pub mod pb {
    tonic::include_proto!("courtline.records.v1");
}

pub mod client;
pub mod query;
pub mod service;
pub mod store;
