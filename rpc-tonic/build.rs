//! Generates tonic's client and server for the interoperability suite's `.proto` files and the
//! level-2 tests' echo service (`proto/`) with the protoc that `protoc-bin-vendored` ships, so
//! no system protoc is needed.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protoc = protoc_bin_vendored::protoc_bin_path()?;
    let mut config = prost_build::Config::new();
    config.protoc_executable(protoc);
    // `bytes` fields as `bytes::Bytes`: payloads are slices of the receive buffer.
    config.bytes(["."]);
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .compile_with_config(config, &["proto/test.proto", "proto/echo.proto"], &["proto"])?;
    println!("cargo:rerun-if-changed=proto");
    Ok(())
}
