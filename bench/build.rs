//! Generates the tonic service of the benchmark (small and large echo) without a `.proto` file
//! or protoc: tonic-build's manual builder, with prost messages defined in `src/grpc.rs`.

fn main() {
    let method = |name: &str, route: &str, message: &str| {
        tonic_build::manual::Method::builder()
            .name(name)
            .route_name(route)
            .input_type(message)
            .output_type(message)
            .codec_path("tonic_prost::ProstCodec")
            .build()
    };
    let service = tonic_build::manual::Service::builder()
        .name("Bench")
        .package("bench")
        .method(method("small", "Small", "crate::grpc::PbSmall"))
        .method(method("large", "Large", "crate::grpc::PbLarge"))
        .build();
    tonic_build::manual::Builder::new().compile(&[service]);
}
