//! The records contract, the bottom floor: the gRPC types both processes speak,
//! the names of their enums, the digest a recording is known by, the client
//! connection, and the metrics text both serve. Runs in both processes;
//! imports nothing of courtline.

/// Code generated from `proto/courtline/records/v1/records.proto`: the wire contract.
#[allow(missing_docs)]
pub mod pb {
    tonic::include_proto!("courtline.records.v1");

    /// The encoded proto descriptors, served by gRPC reflection.
    pub const FILE_DESCRIPTOR_SET: &[u8] =
        tonic::include_file_descriptor_set!("records_descriptor");
}

pub mod connect;
pub mod digest;
pub mod exposition;
pub mod names;
pub mod row;

/// Metadata key of the optional stated reason (UTF-8, so a binary `-bin` key).
pub const REASON_METADATA: &str = "x-courtline-reason-bin";
/// Metadata key of the user name a client states (UTF-8, so a binary `-bin` key);
/// a label under the loopback rule only.
pub const USER_METADATA: &str = "x-courtline-user-bin";

/// Events per LogEvents request the service takes, so one request cannot hold the chain for long.
pub const MAX_BATCH: usize = 1000;
