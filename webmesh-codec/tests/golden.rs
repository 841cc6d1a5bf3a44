//! Golden vectors: frames written by the real Python webmesh 0.1.2 serializers
//! (`scripts/gen_vectors.py`), decoded by this crate.

use serde::Deserialize;
use webmesh_codec::{decode_frame, AnyCodec, Compression, FrameEncoder, FrameType, Framing, Kind, Limits};

#[derive(Deserialize)]
struct File {
    vectors: Vec<Vector>,
}

#[derive(Deserialize)]
struct Vector {
    name: String,
    path: String,
    data_msgpack: String,
    data_json: serde_json::Value,
    msgpack_zlib: String,
    msgpack_plain: String,
    json: Option<String>,
}

fn vectors() -> Vec<Vector> {
    let text = include_str!("vectors/legacy-0.1.2.json");
    let file: File = serde_json::from_str(text).expect("vectors parse");
    assert!(file.vectors.len() >= 30, "vectors file looks truncated");
    file.vectors
}

fn unhex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

fn decode(codec: &AnyCodec, text: &str) -> webmesh_codec::Frame {
    decode_frame(
        Framing::Legacy,
        codec,
        &Limits::default(),
        FrameType::Text,
        text.to_owned().into(),
    )
    .unwrap_or_else(|e| panic!("decoding {text:.60}: {e}"))
}

#[test]
fn python_msgpack_frames_decode_to_the_same_values() {
    for v in vectors() {
        let expected: rmpv::Value = rmpv::decode::read_value(&mut &unhex(&v.data_msgpack)[..]).unwrap();
        for (label, text) in [
            ("zlib", v.msgpack_zlib.clone()),
            ("plain", v.msgpack_plain.clone()),
            ("zlib upper-case hex", v.msgpack_zlib.to_uppercase()),
        ] {
            let frame = decode(&AnyCodec::MSGPACK, &text);
            assert_eq!(frame.kind(), Kind::Legacy);
            assert_eq!(frame.path(), v.path, "{} ({label})", v.name);
            let got: rmpv::Value = frame.decode().unwrap();
            assert_eq!(got, expected, "{} ({label})", v.name);
            assert_eq!(frame.was_compressed(), label != "plain", "{}", v.name);
        }
    }
}

#[test]
fn python_json_frames_decode_to_the_same_values() {
    let mut seen = 0;
    for v in vectors() {
        let Some(text) = &v.json else { continue };
        seen += 1;
        let frame = decode(&AnyCodec::JSON, text);
        assert_eq!(frame.path(), v.path, "{}", v.name);
        let got: serde_json::Value = frame.decode().unwrap();
        assert_eq!(got, v.data_json, "{}", v.name);
    }
    assert!(seen >= 25);
}

#[test]
fn the_framing_is_recognized_whatever_codec_is_configured() {
    // A server set up for msgpack still understands a 0.1.2 peer using the JSON serializer, and
    // the other way round; the frame says which codec to answer in.
    let v = vectors().into_iter().find(|v| v.name == "greeting").unwrap();
    let f = decode(&AnyCodec::MSGPACK, v.json.as_ref().unwrap());
    assert_eq!(f.codec(), &AnyCodec::JSON);
    let f = decode(&AnyCodec::JSON, &v.msgpack_zlib);
    assert_eq!(f.codec(), &AnyCodec::MSGPACK);
}

#[derive(Debug, PartialEq, Deserialize)]
struct Greeting {
    name: String,
    count: u32,
}

#[derive(Debug, PartialEq, Deserialize)]
struct Small {
    id: u64,
    name: String,
    values: Vec<u32>,
}

#[test]
fn python_frames_decode_straight_into_typed_payloads() {
    for v in vectors() {
        let frames = [
            decode(&AnyCodec::MSGPACK, &v.msgpack_zlib),
            decode(&AnyCodec::MSGPACK, &v.msgpack_plain),
        ];
        let json = v.json.as_ref().map(|t| decode(&AnyCodec::JSON, t));
        for f in frames.iter().chain(json.iter()) {
            match v.name.as_str() {
                "greeting" => assert_eq!(
                    f.decode::<Greeting>().unwrap(),
                    Greeting {
                        name: "Ada".into(),
                        count: 3
                    }
                ),
                "small_struct" => assert_eq!(f.decode::<Small>().unwrap().values, [1, 2, 3, 4, 5, 6, 7, 8]),
                "uint64_max" => assert_eq!(f.decode::<u64>().unwrap(), u64::MAX),
                "int64_min" => assert_eq!(f.decode::<i64>().unwrap(), i64::MIN),
                "float_neg" => assert_eq!(f.decode::<f64>().unwrap(), -0.1),
                "unicode" => assert_eq!(f.decode::<String>().unwrap(), "héllo wörld ✓ 日本語 🎉"),
                "bin" => assert_eq!(
                    f.decode::<serde_bytes::ByteBuf>().unwrap().as_slice(),
                    [0, 1, 0xfe, 0xff]
                ),
                "none" | "missing_data" => {
                    assert!(f.payload_is_nil());
                    assert_eq!(f.decode::<Option<u8>>().unwrap(), None);
                    f.decode::<()>().unwrap();
                }
                "false" => assert!(!f.decode::<bool>().unwrap()),
                "list" => {
                    let l: (u8, String, f64, Option<u8>, bool) = f.decode().unwrap();
                    assert_eq!(l.1, "two");
                }
                "greeting_wrong" => unreachable!(),
                _ => {}
            }
            if v.name == "greeting" {
                let err = f.decode::<Small>().unwrap_err();
                assert!(err.is_payload_mismatch(), "{err}");
            }
        }
    }
}

#[test]
fn rust_legacy_frames_match_python_bytes_when_uncompressed() {
    // The plain (compressor=None) form has no zlib level to differ by: byte for byte the same
    // msgpack as Python's for the same value.
    let enc = FrameEncoder::new(
        Framing::Legacy,
        AnyCodec::MSGPACK,
        Compression::default().legacy_zlib(false),
    );
    for v in vectors() {
        if v.name == "reordered_keys" || v.name == "missing_data" {
            continue;
        }
        let value: rmpv::Value = rmpv::decode::read_value(&mut &unhex(&v.data_msgpack)[..]).unwrap();
        let msg = enc.call(0, &v.path, &value).unwrap();
        assert_eq!(
            std::str::from_utf8(msg.as_bytes()).unwrap(),
            v.msgpack_plain,
            "{}",
            v.name
        );
    }
}
