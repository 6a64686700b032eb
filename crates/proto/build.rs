//! Generates the Rust types of `proto/hashbuy/v1` with prost, and their
//! serde mapping (proto3 JSON, snake_case field names) with pbjson.
//!
//! protoc comes from `protoc-bin-vendored`, so a fresh machine needs no
//! system protoc.

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../proto");
    let files: Vec<PathBuf> = [
        "tweet",
        "tables",
        "payment",
        "dead_letter",
        "reply",
        "pending",
        "stock",
        "ledger",
    ]
    .iter()
    .map(|name| root.join(format!("hashbuy/v1/{name}.proto")))
    .collect();
    for file in &files {
        println!("cargo:rerun-if-changed={}", file.display());
    }

    let descriptors = PathBuf::from(std::env::var("OUT_DIR")?).join("hashbuy_descriptors.bin");
    prost_build::Config::new()
        .protoc_executable(protoc_bin_vendored::protoc_bin_path()?)
        .file_descriptor_set_path(&descriptors)
        .compile_protos(&files, &[&root])?;

    pbjson_build::Builder::new()
        .register_descriptors(&std::fs::read(&descriptors)?)?
        .preserve_proto_field_names()
        .emit_fields()
        .build(&[".hashbuy"])?;
    Ok(())
}
