//! Compiles `proto/local.proto` (the Local API) and `proto/peer.proto` (the
//! Peer API) with protox (pure Rust), so building hoard needs no system
//! `protoc`. Both are package `hoard.v1`: one generated module.
fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto/local.proto");
    println!("cargo:rerun-if-changed=proto/peer.proto");
    let fds = protox::compile(["proto/local.proto", "proto/peer.proto"], ["proto"])?;
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
