//! Generates the records-service gRPC code from `proto/`.
//!
//! protoc comes from `protoc-bin-vendored` so that building needs no system
//! protobuf install (developers' machines and CI only reach package registries).

use std::error::Error;

fn main() -> Result<(), Box<dyn Error>> {
    println!("cargo:rerun-if-changed=proto");
    // `sqlx::migrate!` embeds `migrations/` at compile time; Cargo must rebuild when it changes.
    println!("cargo:rerun-if-changed=migrations");

    let protoc = protoc_bin_vendored::protoc_bin_path()?;
    let mut config = tonic_prost_build::Config::new();
    // Same effect as setting PROTOC, without mutating the build script's environment.
    config.protoc_executable(protoc);

    // The descriptor set feeds gRPC reflection, so `grpcurl` can explore the service.
    let descriptors =
        std::path::PathBuf::from(std::env::var("OUT_DIR")?).join("records_descriptor.bin");
    tonic_prost_build::configure()
        .file_descriptor_set_path(descriptors)
        .build_client(true)
        .build_server(true)
        .compile_with_config(
            config,
            &["proto/courtline/records/v1/records.proto"],
            &["proto"],
        )?;
    Ok(())
}
