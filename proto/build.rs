//! Compiles `schemas/*.proto` with the protoc binary vendored by `protoc-bin-vendored`: no
//! system protoc is needed.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protoc = protoc_bin_vendored::protoc_bin_path()?;
    std::env::set_var("PROTOC", protoc);
    println!("cargo:rerun-if-changed=schemas");
    prost_build::Config::new().bytes(["."]).compile_protos(&["schemas/blob.proto"], &["schemas"])?;
    Ok(())
}
