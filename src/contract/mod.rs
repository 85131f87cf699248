//! The records contract: the gRPC types both processes speak.

/// Code generated from `proto/courtline/records/v1/records.proto`: the wire contract.
#[allow(missing_docs)]
pub mod pb {
    tonic::include_proto!("courtline.records.v1");

    /// The encoded proto descriptors, served by gRPC reflection.
    pub const FILE_DESCRIPTOR_SET: &[u8] =
        tonic::include_file_descriptor_set!("records_descriptor");
}
