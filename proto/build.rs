//! Compiles `proto/hoard.proto` with protox (pure Rust), so building hoard
//! needs no system `protoc`.
fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto/hoard.proto");
    let fds = protox::compile(["proto/hoard.proto"], ["proto"])?;
    tonic_prost_build::configure()
        .bytes(".hoard.v1.ReadReply.data")
        .bytes(".hoard.v1.CleanRequest.data")
        .bytes(".hoard.v1.CleanWhole.content")
        .bytes(".hoard.v1.ReadBatchReply.data")
        .bytes(".hoard.v1.ChunkData.data")
        .bytes(".hoard.v1.FrameData.payload")
        .bytes(".hoard.v1.FramePut.payload")
        .compile_fds(fds)?;
    Ok(())
}
