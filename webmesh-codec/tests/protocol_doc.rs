//! docs/PROTOCOL.md shows real frames: this test fails when the encoder and the document differ.

use webmesh_codec::{code, AnyCodec, Compression, FrameEncoder, Framing, WireMessage};

const DOC: &str = include_str!("../../docs/PROTOCOL.md");

fn shown(msg: &WireMessage) -> String {
    match msg {
        WireMessage::Text(t) => t.clone(),
        WireMessage::Binary(b) => b.iter().map(|x| format!("{x:02x}")).collect::<Vec<_>>().join(" "),
    }
}

fn assert_documented(label: &str, msg: &WireMessage) {
    let s = shown(msg);
    assert!(
        DOC.contains(&s),
        "PROTOCOL.md does not show the {label} frame:\n  {s}"
    );
}

#[test]
fn every_example_frame_is_the_encoders_output() {
    let legacy = FrameEncoder::new(Framing::Legacy, AnyCodec::MSGPACK, Compression::default());
    let plain = FrameEncoder::new(
        Framing::Legacy,
        AnyCodec::MSGPACK,
        Compression::default().legacy_zlib(false),
    );
    let json = FrameEncoder::new(Framing::Legacy, AnyCodec::JSON, Compression::default());
    let v1 = FrameEncoder::new(Framing::V1, AnyCodec::MSGPACK, Compression::default());
    let v1_json = FrameEncoder::new(Framing::V1, AnyCodec::JSON, Compression::default());

    assert_documented("legacy msgpack+zlib", &legacy.call(0, "/echo", "hi").unwrap());
    assert_documented("legacy plain msgpack", &plain.call(0, "/echo", "hi").unwrap());
    assert_documented("legacy json", &json.call(0, "/echo", "hi").unwrap());
    assert_documented("CALL", &v1.call(7, "/echo", "hi").unwrap());
    assert_documented("REPLY", &v1.reply(7, "/echo", "hi").unwrap().unwrap());
    assert_documented(
        "ERROR",
        &v1.error_plain(7, code::NOT_FOUND, "no route at /nope")
            .unwrap()
            .unwrap(),
    );
    assert_documented("NOTIFY", &v1.notify("/tick", &1).unwrap());
    assert_documented("CANCEL", &v1.cancel(7).unwrap());
    assert_documented(
        "CALL with a budget",
        &v1.call_within(7, "/echo", "hi", std::time::Duration::from_millis(250))
            .unwrap(),
    );
    assert_documented(
        "json CALL",
        &v1_json.call(300, "/echo", &serde_json::json!({"a": 1})).unwrap(),
    );
    assert_documented(
        "compressed CALL",
        &v1.call(8, "/big", &"ab".repeat(1000)).unwrap(),
    );
}

#[test]
fn documented_defaults_match_the_code() {
    assert_eq!(webmesh_codec::DEFAULT_MAX_FRAME_SIZE, 16 << 20);
    assert_eq!(webmesh_codec::DEFAULT_MAX_INFLATED_SIZE, 32 << 20);
    assert_eq!(webmesh_codec::DEFAULT_COMPRESSION_MIN_SIZE, 1024);
    assert_eq!(webmesh_codec::DEFAULT_COMPRESSION_LEVEL, 1);
    assert!(DOC.contains("| 16 MiB |") && DOC.contains("| 32 MiB |") && DOC.contains("at least 1 KiB"));
}
