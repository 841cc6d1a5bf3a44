//! The rules docs/PROTOCOL.md states for values, bodies, headers and the legacy envelope, pinned
//! one by one: its conformance section points here. Each test is named after the rule.

use bytes::Bytes;
use rmpv::Value;
use serde::Deserialize;
use webmesh_codec::{
    decode_frame, AnyCodec, Compression, Error, FrameEncoder, FrameType, Framing, Kind, Limits, WireMessage,
};

fn v1(codec: &AnyCodec, bytes: &[u8]) -> Result<webmesh_codec::Frame, Error> {
    decode_frame(
        Framing::V1,
        codec,
        &Limits::default(),
        FrameType::Binary,
        Bytes::copy_from_slice(bytes),
    )
}

fn legacy(text: &str) -> Result<webmesh_codec::Frame, Error> {
    decode_frame(
        Framing::Legacy,
        &AnyCodec::MSGPACK,
        &Limits::default(),
        FrameType::Text,
        Bytes::copy_from_slice(text.as_bytes()),
    )
}

#[derive(Debug, PartialEq, Deserialize)]
struct Point {
    x: i32,
    y: i32,
}

#[test]
fn section_1_structs_decode_from_maps_or_arrays_and_extra_fields_are_ignored() {
    for (codec, map, array, extra) in [
        (
            AnyCodec::MSGPACK,
            &[0x82, 0xa1, b'x', 1, 0xa1, b'y', 2][..],
            &[0x92, 1, 2][..],
            &[0x83, 0xa1, b'x', 1, 0xa1, b'y', 2, 0xa1, b'z', 3][..],
        ),
        (
            AnyCodec::JSON,
            &br#"{"x":1,"y":2}"#[..],
            &b"[1,2]"[..],
            &br#"{"x":1,"y":2,"z":3}"#[..],
        ),
    ] {
        for bytes in [map, array, extra] {
            assert_eq!(
                codec.decode::<Point>(bytes).unwrap(),
                Point { x: 1, y: 2 },
                "{}",
                codec.name()
            );
        }
    }
}

#[test]
fn section_1_json_numbers_beyond_64_bits_become_floats_and_overflowing_floats_are_refused() {
    let json = AnyCodec::JSON;
    assert_eq!(
        json.decode::<Value>(b"18446744073709551615").unwrap(),
        Value::from(u64::MAX)
    );
    assert_eq!(
        json.decode::<Value>(b"18446744073709551616").unwrap(),
        Value::F64(18446744073709551616.0)
    );
    assert_eq!(
        json.decode::<Value>(b"-9223372036854775809").unwrap(),
        Value::F64(-9223372036854775809.0)
    );
    assert!(
        json.decode::<Value>(b"1e400").is_err(),
        "out of range: bad_request"
    );
}

#[test]
fn section_1_json_writes_bytes_as_an_array_of_numbers() {
    let mut out = Vec::new();
    AnyCodec::JSON
        .encode(&Value::Binary(vec![1, 2, 255]), &mut out)
        .unwrap();
    assert_eq!(out, b"[1,2,255]");
    let mut out = Vec::new();
    AnyCodec::JSON
        .encode(&serde_bytes::ByteBuf::from(vec![1u8, 2]), &mut out)
        .unwrap();
    assert_eq!(out, b"[1,2]");
}

#[test]
fn section_1_msgpack_float32_and_ext_survive_an_untyped_echo() {
    for bytes in [&[0xca, 0x3f, 0xc0, 0, 0][..], &[0xd4, 0x05, 0x07][..]] {
        let v = AnyCodec::MSGPACK.decode::<Value>(bytes).unwrap();
        let mut out = Vec::new();
        AnyCodec::MSGPACK.encode(&v, &mut out).unwrap();
        assert_eq!(out, bytes);
    }
}

#[test]
fn section_1_msgpack_integers_use_the_smallest_encoding_and_floats_keep_their_width() {
    let enc = |v: &dyn erased::Enc| v.bytes();
    assert_eq!(enc(&5u64), [0x05]);
    assert_eq!(enc(&300u64), [0xcd, 0x01, 0x2c]);
    assert_eq!(enc(&-1i64), [0xff]);
    assert_eq!(enc(&1.5f64), [0xcb, 0x3f, 0xf8, 0, 0, 0, 0, 0, 0]);
    assert_eq!(
        enc(&1.5f32),
        [0xca, 0x3f, 0xc0, 0, 0],
        "an f32 is written as float32"
    );
    // A reader takes either width, and integers, where a float is expected.
    assert_eq!(
        AnyCodec::MSGPACK
            .decode::<f64>(&[0xca, 0x3f, 0xc0, 0, 0])
            .unwrap(),
        1.5
    );
    assert_eq!(AnyCodec::MSGPACK.decode::<f64>(&[0x05]).unwrap(), 5.0);
}

mod erased {
    pub(crate) trait Enc {
        fn bytes(&self) -> Vec<u8>;
    }
    impl<T: serde::Serialize> Enc for T {
        fn bytes(&self) -> Vec<u8> {
            let mut out = Vec::new();
            webmesh_codec::AnyCodec::MSGPACK.encode(self, &mut out).unwrap();
            out
        }
    }
}

#[test]
fn section_4_a_body_is_exactly_one_value() {
    for codec in [AnyCodec::MSGPACK, AnyCodec::JSON] {
        // CALL id 7 on "/": empty body.
        let empty = v1(&codec, &[0x00, 0x07, 0x01, b'/']).unwrap();
        assert!(empty.decode::<Value>().is_err(), "an empty body is not null");
        assert!(
            empty.decode::<()>().is_err(),
            "not even for a route without payload"
        );
    }
    let trailing = v1(&AnyCodec::MSGPACK, &[0x00, 0x07, 0x01, b'/', 0x01, 0x02]).unwrap();
    assert!(trailing.decode::<Value>().is_err(), "trailing bytes");
    let trailing = v1(&AnyCodec::JSON, b"\x00\x07\x01/1 2").unwrap();
    assert!(trailing.decode::<Value>().is_err(), "trailing characters");
}

#[test]
fn section_4_varints_may_be_non_minimal_and_stop_at_ten_bytes() {
    // Id 7 written in two bytes (0x87 0x00): accepted.
    let f = v1(&AnyCodec::MSGPACK, &[0x00, 0x87, 0x00, 0x01, b'/', 0xc0]).unwrap();
    assert_eq!((f.kind(), f.id(), f.path()), (Kind::Call, 7, "/"));
    // u64::MAX in ten bytes: the largest id.
    let mut max = vec![0x00];
    max.extend([0xff; 9]);
    max.extend([0x01, 0x00, 0xc0]);
    assert_eq!(v1(&AnyCodec::MSGPACK, &max).unwrap().id(), u64::MAX);
    // An eleventh byte, or a tenth byte past 2^64: refused.
    let mut long = vec![0x00];
    long.extend([0x80; 10]);
    long.extend([0x00, 0x00, 0xc0]);
    assert!(matches!(
        v1(&AnyCodec::MSGPACK, &long),
        Err(Error::VarintOverflow)
    ));
    let mut over = vec![0x00];
    over.extend([0xff; 9]);
    over.extend([0x02, 0x00, 0xc0]);
    assert!(matches!(
        v1(&AnyCodec::MSGPACK, &over),
        Err(Error::VarintOverflow)
    ));
}

#[test]
fn section_2_a_msgpack_map_marker_means_no_zlib_anything_else_is_a_zlib_stream() {
    // An eight-key map starts 0x88: it is a map, although 0x88 has low nibble 8.
    let mut eight = vec![0x88, 0xa4];
    eight.extend(b"path");
    eight.extend([0xa2, b'/', b'p', 0xa4]);
    eight.extend(b"data");
    eight.push(0x01);
    for k in 0..6u8 {
        eight.extend([0xa1, b'a' + k, 0xc0]);
    }
    let hex: String = eight.iter().map(|b| format!("{b:02x}")).collect();
    let f = legacy(&hex).unwrap();
    assert_eq!((f.path(), f.was_compressed()), ("/p", false));
    // Either hex case.
    let f = legacy(&hex.to_uppercase()).unwrap();
    assert_eq!(f.path(), "/p");
    // 0x78 (a zlib header) is inflated.
    let enc = FrameEncoder::new(Framing::Legacy, AnyCodec::MSGPACK, Compression::default());
    let WireMessage::Text(text) = enc.call(0, "/p", &1).unwrap() else {
        unreachable!()
    };
    assert!(text.starts_with("7801"), "zlib level 1: {text}");
    assert!(legacy(&text).unwrap().was_compressed());
}

#[test]
fn section_2_json_envelopes_start_with_a_brace_and_may_have_any_whitespace() {
    let f = legacy("  {\"data\": 1, \"extra\": true, \"path\": \"/e\"}").unwrap();
    assert_eq!((f.path(), f.decode::<i32>().unwrap()), ("/e", 1));
    assert!(
        legacy("{\"path\": \"/e\"}").unwrap().payload_is_nil(),
        "missing data is null"
    );
}

#[test]
fn section_5_the_frame_limit_is_inclusive() {
    let limits = Limits::default().max_frame_size(10);
    let decode = |bytes: &[u8]| {
        decode_frame(
            Framing::V1,
            &AnyCodec::MSGPACK,
            &limits,
            FrameType::Binary,
            Bytes::copy_from_slice(bytes),
        )
    };
    assert!(decode(&[0x01, 0x00, 0x01, b'/', 0xa5, b'a', b'b', b'c', b'd', b'e']).is_ok());
    assert!(matches!(
        decode(&[0x01, 0x00, 0x01, b'/', 0xa6, b'a', b'b', b'c', b'd', b'e', b'f']),
        Err(Error::FrameTooLarge { size: 11, max: 10 })
    ));
}

/// The compressed example of §4: its content and sizes, not only its bytes.
#[test]
fn section_4_the_compressed_example_is_2000_characters_of_ab() {
    let content = "ab".repeat(1000);
    assert_eq!(content.len(), 2000);
    let mut plain = Vec::new();
    AnyCodec::MSGPACK.encode(&content, &mut plain).unwrap();
    assert_eq!(plain.len(), 2003, "da 07 d0, then the 2000 bytes");
    assert_eq!(&plain[..3], &[0xda, 0x07, 0xd0]);
    let enc = FrameEncoder::new(Framing::V1, AnyCodec::MSGPACK, Compression::default());
    let frame = enc.call(8, "/big", &content).unwrap();
    assert_eq!(frame.len(), 40);
    let f = v1(&AnyCodec::MSGPACK, frame.as_bytes()).unwrap();
    assert!(f.was_compressed());
    assert_eq!(f.decode::<String>().unwrap(), content);
    let doc = include_str!("../../docs/PROTOCOL.md");
    assert!(
        doc.contains("\"ab\" repeated 1000 times"),
        "the document states the content"
    );
    assert!(doc.contains("2003-byte msgpack string") && doc.contains("40 bytes"));
}

#[test]
fn section_4_a_call_may_carry_its_budget_in_milliseconds_rounded_up() {
    use std::time::Duration;
    let enc = FrameEncoder::new(Framing::V1, AnyCodec::MSGPACK, Compression::default());
    let f = |budget| {
        let msg = enc.call_within(7, "/echo", &"hi", budget).unwrap();
        v1(&AnyCodec::MSGPACK, msg.as_bytes()).unwrap()
    };
    let call = f(Duration::from_millis(250));
    assert_eq!(
        (call.kind(), call.id(), call.path(), call.budget()),
        (Kind::Call, 7, "/echo", Some(Duration::from_millis(250)))
    );
    assert_eq!(call.decode::<String>().unwrap(), "hi");
    assert_eq!(
        f(Duration::from_micros(1)).budget(),
        Some(Duration::from_millis(1)),
        "rounded up"
    );
    assert_eq!(f(Duration::ZERO).budget(), Some(Duration::ZERO));
    // Without the flag, no budget; a truncated budget is a header error.
    assert_eq!(
        v1(&AnyCodec::MSGPACK, &[0x00, 0x07, 0x01, b'/', 0xc0])
            .unwrap()
            .budget(),
        None
    );
    assert!(matches!(
        v1(&AnyCodec::MSGPACK, &[0x20, 0x07]),
        Err(Error::TruncatedHeader("deadline"))
    ));
    // With compression too.
    let big = "ab".repeat(1000);
    let msg = enc.call_within(8, "/big", &big, Duration::from_secs(3)).unwrap();
    let call = v1(&AnyCodec::MSGPACK, msg.as_bytes()).unwrap();
    assert!(call.was_compressed());
    assert_eq!(
        (call.budget(), call.decode::<String>().unwrap()),
        (Some(Duration::from_secs(3)), big)
    );
}
