//! Every malformed-input class maps to its own error variant.

use webmesh_codec::{
    decode_frame, AnyCodec, Compression, Error, FrameEncoder, FrameType, Framing, Limits, WireMessage,
};

fn zlib(bytes: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
    z.write_all(bytes).unwrap();
    z.finish().unwrap()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn msgpack(v: &rmpv::Value) -> Vec<u8> {
    let mut out = Vec::new();
    rmpv::encode::write_value(&mut out, v).unwrap();
    out
}

fn map(pairs: Vec<(&str, rmpv::Value)>) -> rmpv::Value {
    rmpv::Value::Map(pairs.into_iter().map(|(k, v)| (k.into(), v)).collect())
}

fn legacy(codec: &AnyCodec, text: &str) -> Result<webmesh_codec::Frame, Error> {
    decode_frame(
        Framing::Legacy,
        codec,
        &Limits::default(),
        FrameType::Text,
        text.to_owned().into(),
    )
}

fn legacy_mp(text: &str) -> Result<webmesh_codec::Frame, Error> {
    legacy(&AnyCodec::MSGPACK, text)
}

fn v1(bytes: &[u8]) -> Result<webmesh_codec::Frame, Error> {
    decode_frame(
        Framing::V1,
        &AnyCodec::MSGPACK,
        &Limits::default(),
        FrameType::Binary,
        bytes.to_vec().into(),
    )
}

#[test]
fn bad_hex() {
    assert!(matches!(
        legacy_mp("78zz"),
        Err(Error::InvalidHex {
            offset: 2,
            byte: b'z'
        })
    ));
    assert!(matches!(
        legacy_mp("78\u{e9}"),
        Err(Error::InvalidHex { offset: 2, .. })
    ));
}

#[test]
fn odd_length_hex() {
    assert!(matches!(legacy_mp("789"), Err(Error::OddHexLength { len: 3 })));
}

#[test]
fn not_zlib() {
    assert!(matches!(legacy_mp(&hex(b"hello")), Err(Error::NotZlib)));
    assert!(matches!(legacy_mp(""), Err(Error::TruncatedZlib)));
}

#[test]
fn truncated_zlib() {
    let z = zlib(&msgpack(&map(vec![
        ("path", "/a".into()),
        ("data", "x".repeat(100).into()),
    ])));
    for cut in [2, z.len() / 2, z.len() - 1] {
        assert!(
            matches!(legacy_mp(&hex(&z[..cut])), Err(Error::TruncatedZlib)),
            "cut {cut}"
        );
    }
}

#[test]
fn corrupt_zlib() {
    let mut z = zlib(&msgpack(&map(vec![("path", "/a".into()), ("data", 1.into())])));
    let n = z.len();
    z[n - 1] ^= 0xff; // adler32
    assert!(matches!(legacy_mp(&hex(&z)), Err(Error::CorruptZlib(_))));
}

#[test]
fn zlib_of_non_msgpack() {
    assert!(matches!(
        legacy_mp(&hex(&zlib(b"\xc1garbage"))),
        Err(Error::Malformed { codec: "msgpack", .. })
    ));
    // A map that ends early.
    assert!(matches!(
        legacy_mp(&hex(&zlib(b"\x82\xa4path"))),
        Err(Error::Malformed { .. })
    ));
    // A map followed by junk.
    let mut bytes = msgpack(&map(vec![("path", "/a".into())]));
    bytes.push(0);
    assert!(matches!(
        legacy_mp(&hex(&zlib(&bytes))),
        Err(Error::Malformed { .. })
    ));
}

#[test]
fn non_map() {
    for v in [
        rmpv::Value::from(vec![rmpv::Value::from(1)]),
        "path".into(),
        rmpv::Value::Nil,
        7.into(),
    ] {
        assert!(
            matches!(legacy_mp(&hex(&zlib(&msgpack(&v)))), Err(Error::NotAMap)),
            "{v}"
        );
    }
    for text in ["[1, 2]", "\"x\"", "null", "3"] {
        // JSON is recognized by its leading '{': other JSON texts are not hex either.
        assert!(legacy(&AnyCodec::JSON, text).is_err());
    }
    assert!(matches!(
        legacy(&AnyCodec::JSON, "{\"path\": \"/a\"} [1]"),
        Err(Error::Malformed { codec: "json", .. })
    ));
}

#[test]
fn missing_path() {
    let m = map(vec![("data", 1.into())]);
    assert!(matches!(
        legacy_mp(&hex(&zlib(&msgpack(&m)))),
        Err(Error::MissingPath)
    ));
    assert!(matches!(
        legacy(&AnyCodec::JSON, "{\"data\": 1}"),
        Err(Error::MissingPath)
    ));
}

#[test]
fn non_string_path() {
    for p in [
        rmpv::Value::from(5),
        rmpv::Value::Nil,
        rmpv::Value::Binary(b"/a".to_vec()),
        vec![rmpv::Value::from(1)].into(),
    ] {
        let m = map(vec![("path", p), ("data", 1.into())]);
        assert!(matches!(
            legacy_mp(&hex(&zlib(&msgpack(&m)))),
            Err(Error::PathNotString)
        ));
    }
    for text in [
        r#"{"path": 5}"#,
        r#"{"path": null, "data": 1}"#,
        r#"{"path": ["/a"]}"#,
        r#"{"path": {"a": 1}}"#,
    ] {
        assert!(
            matches!(legacy(&AnyCodec::JSON, text), Err(Error::PathNotString)),
            "{text}"
        );
    }
}

#[test]
fn wrong_payload_type() {
    #[derive(Debug, serde::Deserialize)]
    #[allow(dead_code)]
    struct Greeting {
        name: String,
    }
    let enc = FrameEncoder::new(Framing::Legacy, AnyCodec::MSGPACK, Compression::default());
    let WireMessage::Text(t) = enc.call(0, "/g", &[1, 2, 3]).unwrap() else {
        panic!()
    };
    let f = legacy_mp(&t).unwrap();
    assert_eq!(f.path(), "/g");
    let err = f.decode::<Greeting>().unwrap_err();
    assert!(matches!(err, Error::Payload { .. }), "{err}");
    let f = legacy(&AnyCodec::JSON, r#"{"path": "/g", "data": {"name": 1}}"#).unwrap();
    assert!(matches!(f.decode::<Greeting>(), Err(Error::Payload { .. })));
}

#[test]
fn oversized_frames() {
    let limits = Limits::default().max_frame_size(100);
    let big = "0".repeat(101);
    let err = decode_frame(
        Framing::Legacy,
        &AnyCodec::MSGPACK,
        &limits,
        FrameType::Text,
        big.into(),
    )
    .unwrap_err();
    assert!(matches!(err, Error::FrameTooLarge { size: 101, max: 100 }));
    let err = decode_frame(
        Framing::V1,
        &AnyCodec::MSGPACK,
        &limits,
        FrameType::Binary,
        vec![0; 101].into(),
    )
    .unwrap_err();
    assert!(matches!(err, Error::FrameTooLarge { size: 101, max: 100 }));
}

#[test]
fn inflated_past_the_limit() {
    let limits = Limits::default().max_inflated_size(1000);
    let m = map(vec![("path", "/a".into()), ("data", "x".repeat(2000).into())]);
    let text = hex(&zlib(&msgpack(&m)));
    let err = decode_frame(
        Framing::Legacy,
        &AnyCodec::MSGPACK,
        &limits,
        FrameType::Text,
        text.into(),
    )
    .unwrap_err();
    assert!(matches!(err, Error::InflatedTooLarge { max: 1000 }));

    let enc = FrameEncoder::new(Framing::V1, AnyCodec::MSGPACK, Compression::default().min_size(0));
    let WireMessage::Binary(b) = enc.call(1, "/a", &"x".repeat(2000)).unwrap() else {
        panic!()
    };
    assert_eq!(b[0] & 0x10, 0x10, "compressed");
    let err = decode_frame(
        Framing::V1,
        &AnyCodec::MSGPACK,
        &limits,
        FrameType::Binary,
        b.into(),
    )
    .unwrap_err();
    assert!(matches!(err, Error::InflatedTooLarge { max: 1000 }));
}

#[test]
fn wrong_frame_type_for_the_framing() {
    let err = decode_frame(
        Framing::V1,
        &AnyCodec::MSGPACK,
        &Limits::default(),
        FrameType::Text,
        "{}".into(),
    )
    .unwrap_err();
    assert!(matches!(
        err,
        Error::WrongFrameType {
            got: "text",
            expected: "binary",
            ..
        }
    ));
    let err = decode_frame(
        Framing::Legacy,
        &AnyCodec::MSGPACK,
        &Limits::default(),
        FrameType::Binary,
        vec![0x78].into(),
    )
    .unwrap_err();
    assert!(matches!(
        err,
        Error::WrongFrameType {
            got: "binary",
            expected: "text",
            ..
        }
    ));
}

#[test]
fn v1_header_errors() {
    assert!(matches!(v1(b""), Err(Error::TruncatedHeader("kind"))));
    assert!(matches!(v1(b"\x00"), Err(Error::TruncatedHeader("id"))));
    assert!(matches!(v1(b"\x00\x80"), Err(Error::TruncatedHeader("id"))));
    assert!(matches!(
        v1(b"\x00\x01"),
        Err(Error::TruncatedHeader("path length"))
    ));
    assert!(matches!(
        v1(b"\x00\x01\x05/ab"),
        Err(Error::TruncatedHeader("path"))
    ));
    assert!(matches!(v1(b"\x00\x01\x02\xff\xfe\xc0"), Err(Error::PathNotUtf8)));
    assert!(matches!(v1(b"\x80\x01\x00\xc0"), Err(Error::ReservedFlags(0x80))));
    assert!(matches!(
        v1(b"\x00\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\x00"),
        Err(Error::VarintOverflow)
    ));
    assert!(matches!(v1(b"\x10\x01\x00hello"), Err(Error::NotZlib)));
    // An unknown kind still decodes, with its id, so the receiver can answer "unsupported".
    let f = v1(b"\x0e\x09\x00").unwrap();
    assert_eq!((f.kind(), f.id()), (webmesh_codec::Kind::Unknown(14), 9));
}

#[test]
fn v1_payload_errors() {
    // Truncated msgpack payload: malformed, not a type mismatch.
    let f = v1(b"\x00\x01\x02/a\x92\x01").unwrap();
    assert!(matches!(f.decode::<Vec<u8>>(), Err(Error::Malformed { .. })));
    // Trailing bytes after the value.
    let f = v1(b"\x00\x01\x02/a\x01\x02").unwrap();
    assert!(matches!(f.decode::<u8>(), Err(Error::Malformed { .. })));
    // Well-formed, wrong type.
    let f = v1(b"\x00\x01\x02/a\xa1x").unwrap();
    assert!(matches!(f.decode::<u8>(), Err(Error::Payload { .. })));
}

#[test]
fn arbitrary_bytes_never_panic() {
    // A cheap deterministic sweep; the fuzz targets go much further.
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    for len in 0..400 {
        let bytes: Vec<u8> = (0..len)
            .map(|_| {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                seed as u8
            })
            .collect();
        if let Ok(f) = v1(&bytes) {
            let _ = f.decode::<rmpv::Value>();
            let _ = f.path();
        }
        let text = hex(&bytes);
        for codec in [AnyCodec::MSGPACK, AnyCodec::JSON] {
            if let Ok(f) = legacy(&codec, &text) {
                let _ = f.decode::<rmpv::Value>();
            }
        }
        if let Ok(s) = std::str::from_utf8(&bytes) {
            let _ = legacy(&AnyCodec::JSON, s);
        }
    }
}
