//! Compiles `schemas/*.proto` with zcrpc's `.proto` generator: prost messages (`bytes` fields
//! as `Bytes`) and the services' traits, clients and servers. The protoc binary is the one
//! vendored by `protoc-bin-vendored`: no system protoc is needed.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=schemas");
    zcrpc_codegen::proto::Builder::new()
        .attachment("zcrpc.blob.PutRequest.data")
        .attachment("zcrpc.blob.Blob.data")
        .attachments_from(64 * 1024)
        .compile(&["schemas/blob.proto", "schemas/kitchen_sink.proto"], &["schemas"])?;
    zcrpc_codegen::proto::Builder::new().call_context(true).compile(&["schemas/context.proto"], &["schemas"])?;
    Ok(())
}
