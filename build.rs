//! Compiles `proto/dsr/v1/*.proto` with `protox` (pure Rust, so no system
//! `protoc` is needed) and generates the tonic client and server code, plus
//! the encoded descriptor set that server reflection serves.

use std::{env, path::PathBuf};

use prost::Message;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let files = [
        "proto/dsr/v1/types.proto",
        "proto/dsr/v1/request_service.proto",
        "proto/dsr/v1/processor_service.proto",
        "proto/dsr/v1/instruction_service.proto",
        "proto/dsr/v1/processor_adapter.proto",
        "proto/dsr/v1/data_protection_service.proto",
    ];
    for file in files {
        println!("cargo:rerun-if-changed={file}");
    }
    // `sqlx::migrate!` embeds the migration files at compile time; without
    // this, cargo does not notice a new one and keeps the old list.
    println!("cargo:rerun-if-changed=migrations");
    let fds = protox::compile(files, ["proto"])?;
    let out_dir = PathBuf::from(env::var("OUT_DIR")?);
    std::fs::write(out_dir.join("dsr_descriptor.bin"), fds.encode_to_vec())?;
    tonic_prost_build::configure()
        // Personal data must never reach logs through a stray `{:?}`: these
        // messages get hand-written, redacting Debug impls in `wire::redact`.
        .skip_debug([".dsr.v1.SubjectIdentity", ".dsr.v1.DataRecord"])
        // A message that cannot be decoded is the caller's bad input
        // (INVALID_ARGUMENT), not a server fault: see `wire::codec`.
        .codec_path("crate::wire::codec::WireCodec")
        .compile_fds(fds)?;
    Ok(())
}
