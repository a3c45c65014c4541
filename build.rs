//! Compiles `proto/cpc/v1/cpc.proto` and `record.proto` with a pure-Rust protobuf compiler (protox), so building
//! needs no system `protoc`. Writes the encoded descriptor set to `OUT_DIR/cpc_descriptor.bin`
//! for the reflection service and generates the prost messages and tonic client and server.

use std::path::PathBuf;

use protox::prost::Message as _;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto");
    let fds = protox::compile(["proto/cpc/v1/cpc.proto", "proto/cpc/v1/record.proto"], ["proto"])?;
    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(out_dir.join("cpc_descriptor.bin"), fds.encode_to_vec())?;
    tonic_prost_build::configure().build_client(true).build_server(true).compile_fds(fds)?;
    Ok(())
}
