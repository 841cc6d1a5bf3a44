//! Regression tests: one per bug found, named after it.

use webmesh_codec::{decode_frame, AnyCodec, FrameType, Framing, Limits};

/// Found while writing the codec: rmp-serde's own nesting limit (1024) let a 1,000-level msgpack
/// array overflow a 2 MiB thread stack when decoding into a dynamic value, aborting the process.
/// The codec now limits nesting to 128 (serde_json's limit).
#[test]
fn deeply_nested_payload_is_an_error_not_a_stack_overflow() {
    let mut frame = vec![0x00, 0x01, 0x02, b'/', b'a'];
    frame.extend(std::iter::repeat_n(0x91, 100_000));
    frame.push(0xc0);
    let f = decode_frame(
        Framing::V1,
        &AnyCodec::MSGPACK,
        &Limits::default(),
        FrameType::Binary,
        frame.into(),
    )
    .unwrap();
    // Run on a thread with half the usual 2 MiB stack (tokio workers have 2 MiB): still fine.
    let handle = std::thread::Builder::new()
        .stack_size(1024 * 1024)
        .spawn(move || f.decode::<rmpv::Value>().is_err())
        .unwrap();
    assert!(
        handle.join().expect("no stack overflow"),
        "nesting past the limit is an error"
    );
}

/// The same for JSON, whose parser has its own limit of 128.
#[test]
fn deeply_nested_json_is_an_error() {
    let text = format!(
        "{{\"path\": \"/a\", \"data\": {}1{}}}",
        "[".repeat(10_000),
        "]".repeat(10_000)
    );
    let f = decode_frame(
        Framing::Legacy,
        &AnyCodec::JSON,
        &Limits::default(),
        FrameType::Text,
        text.into(),
    );
    // Either the envelope scan or the payload decode refuses it; neither crashes.
    if let Ok(f) = f {
        assert!(f.decode::<serde_json::Value>().is_err());
    }
}
