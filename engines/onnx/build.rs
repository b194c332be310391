//! Generates the ONNX protobuf types from `proto/onnx.proto` (the file the
//! `onnx` 1.23.2 PyPI wheel ships, Apache-2.0) with prost. protox parses the
//! `.proto` in pure Rust, so no `protoc` binary has to be installed.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto/onnx.proto");
    let fds = protox::compile(["onnx.proto"], ["proto"])?;
    prost_build::Config::new()
        // Initializer payloads can be hundreds of MB: keep them as `Bytes`
        // so building the model does not copy them again.
        .bytes([".onnx.TensorProto.raw_data"])
        .compile_fds(fds)?;
    Ok(())
}
