//! The real Python webmesh 0.1.2 serializers decode legacy frames written by webmesh-codec.

use serde::Serialize;
use webmesh_codec::{AnyCodec, Compression, FrameEncoder, Framing};
use webmesh_tests::{expect_success, run_python};

/// Reads JSON lines {name, codec, frame, expected_msgpack_hex}; decodes `frame` with the 0.1.2
/// serializer and protocol; checks the path and that data equals msgpack.loads(expected).
const CHECK: &str = r#"
import json, sys, msgpack

from webmesh.message_protocols import SimpleDictProtocol
from common import serializer
proto = SimpleDictProtocol()
n = 0
for line in sys.stdin:
    case = json.loads(line)
    path, data = proto.unpack(serializer(case["codec"]).deserialize(case["frame"]))
    expected = msgpack.loads(bytes.fromhex(case["expected"]))
    assert path == case["path"], (case["name"], path)
    assert data == expected and type(data) == type(expected), (case["name"], data, expected)
    n += 1
print(n)
"#;

#[derive(Serialize)]
struct Case {
    name: String,
    codec: &'static str,
    path: String,
    frame: String,
    expected: String,
}

#[derive(Serialize)]
struct Typed {
    id: u64,
    name: String,
    values: Vec<u32>,
    #[serde(with = "serde_bytes_compat")]
    blob: Vec<u8>,
    ratio: f64,
    nested: Option<Box<Typed>>,
}

mod serde_bytes_compat {
    pub(crate) fn serialize<S: serde::Serializer>(b: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(b)
    }
}

fn values() -> Vec<(&'static str, rmpv::Value, bool)> {
    use rmpv::Value as V;
    let typed = Typed {
        id: u64::MAX,
        name: "héllo ✓".into(),
        values: vec![0, 1, 255, 65_536, u32::MAX],
        blob: vec![0, 255, 1],
        ratio: -1.25e-300,
        nested: Some(Box::new(Typed {
            id: 0,
            name: String::new(),
            values: vec![],
            blob: vec![],
            ratio: 0.0,
            nested: None,
        })),
    };
    let typed_value = rmpv::ext::to_value(&typed).unwrap();
    // (name, value, has a JSON form)
    vec![
        ("string", V::from("hello"), true),
        ("unicode", V::from("日本語 🎉 ü"), true),
        ("empty", V::from(""), true),
        ("zero", V::from(0), true),
        ("false", V::from(false), true),
        ("u64_max", V::from(u64::MAX), true),
        ("i64_min", V::from(i64::MIN), true),
        ("float", V::from(0.1), true),
        ("bin", V::Binary(vec![0, 1, 2, 255]), false),
        ("list", V::Array(vec![V::from(1), V::from("a"), V::Nil]), true),
        (
            "map",
            V::Map(vec![(V::from("k"), V::from(vec![V::from(1)]))]),
            true,
        ),
        ("typed_struct", typed_value, false),
        ("long", V::from("x".repeat(100_000)), true),
    ]
}

#[test]
fn python_0_1_2_decodes_rust_legacy_frames() {
    let mut lines = Vec::new();
    let encoders = [
        (
            "msgpack",
            FrameEncoder::new(Framing::Legacy, AnyCodec::MSGPACK, Compression::default()),
        ),
        (
            "msgpack-plain",
            FrameEncoder::new(
                Framing::Legacy,
                AnyCodec::MSGPACK,
                Compression::default().legacy_zlib(false),
            ),
        ),
        (
            "json",
            FrameEncoder::new(Framing::Legacy, AnyCodec::JSON, Compression::default()),
        ),
    ];
    for (name, value, json_ok) in values() {
        let mut expected = Vec::new();
        rmpv::encode::write_value(&mut expected, &value).unwrap();
        let expected: String = expected.iter().map(|b| format!("{b:02x}")).collect();
        for (codec, enc) in &encoders {
            if *codec == "json" && !json_ok {
                continue;
            }
            let path = format!("/{name}/ü");
            let msg = enc.call(0, &path, &value).unwrap();
            let frame = String::from_utf8(msg.as_bytes().to_vec()).unwrap();
            let case = Case {
                name: format!("{name} ({codec})"),
                codec,
                path,
                frame,
                expected: expected.clone(),
            };
            lines.extend(serde_json::to_vec(&case).unwrap());
            lines.push(b'\n');
        }
    }
    let n_cases = lines.iter().filter(|&&b| b == b'\n').count();
    let out = expect_success(&run_python(CHECK, &[], &lines));
    assert_eq!(out.trim(), n_cases.to_string());
}
