//! Compiles `skiff/*.proto` with protox (pure Rust, no `protoc` needed) and generates
//! tonic clients and servers.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protos = ["skiff/raft.proto", "skiff/kv.proto", "skiff/node.proto"];
    for proto in protos {
        println!("cargo:rerun-if-changed={proto}");
    }
    let file_descriptors = protox::compile(protos, ["."])?;
    tonic_prost_build::configure().compile_fds(file_descriptors)?;
    Ok(())
}
