//! Generates tonic's client and server for `proto/bench.proto` with the protoc that
//! `protoc-bin-vendored` ships, so no system protoc is needed.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protoc = protoc_bin_vendored::protoc_bin_path()?;
    let mut config = prost_build::Config::new();
    config.protoc_executable(protoc);
    // Every `bytes` field as `bytes::Bytes`: decoding slices the receive buffer instead of
    // copying into a `Vec<u8>`, the best case tonic offers.
    config.bytes(["."]);
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .compile_with_config(config, &["proto/bench.proto"], &["proto"])?;
    println!("cargo:rerun-if-changed=proto/bench.proto");
    Ok(())
}
