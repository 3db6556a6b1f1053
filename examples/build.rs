//! Generates tonic's client and server for `proto/helloworld.proto` (the tonic drop-in
//! example) with the protoc that `protoc-bin-vendored` ships, so no system protoc is needed.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protoc = protoc_bin_vendored::protoc_bin_path()?;
    let mut config = prost_build::Config::new();
    config.protoc_executable(protoc);
    tonic_prost_build::configure().compile_with_config(config, &["proto/helloworld.proto"], &["proto"])?;
    println!("cargo:rerun-if-changed=proto");
    Ok(())
}
