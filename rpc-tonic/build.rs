//! Generates tonic's client and server for the test protos with the protoc that
//! `protoc-bin-vendored` ships (the tests and examples use them; the library does not).

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protoc = protoc_bin_vendored::protoc_bin_path()?;
    let mut config = prost_build::Config::new();
    config.protoc_executable(protoc);
    config.bytes(["."]);
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .compile_with_config(config, &["proto/echo.proto"], &["proto"])?;
    println!("cargo:rerun-if-changed=proto");
    Ok(())
}
