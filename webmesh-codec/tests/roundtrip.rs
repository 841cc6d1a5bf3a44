//! Property tests: whatever goes in through the encoder comes out of the decoder, for both
//! codecs, both framings, compressed or not.

use std::collections::BTreeMap;

use proptest::prelude::*;
use serde::{Deserialize, Serialize};
use webmesh_codec::{
    decode_frame, AnyCodec, Compression, FrameEncoder, FrameType, Framing, Kind, Limits, WireMessage,
};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Payload {
    id: u64,
    name: String,
    values: Vec<u32>,
    #[serde(with = "serde_bytes")]
    blob: Vec<u8>,
    ratio: f64,
    tags: BTreeMap<String, i64>,
    child: Option<Box<Payload>>,
    kind: Shape,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
enum Shape {
    Dot,
    Circle(u32),
    Rect { w: i16, h: i16 },
}

fn shape() -> impl Strategy<Value = Shape> {
    prop_oneof![
        Just(Shape::Dot),
        any::<u32>().prop_map(Shape::Circle),
        (any::<i16>(), any::<i16>()).prop_map(|(w, h)| Shape::Rect { w, h }),
    ]
}

fn leaf() -> impl Strategy<Value = Payload> {
    (
        any::<u64>(),
        ".{0,40}",
        prop::collection::vec(any::<u32>(), 0..20),
        prop::collection::vec(any::<u8>(), 0..64),
        -1e300f64..1e300,
        prop::collection::btree_map(".{0,8}", any::<i64>(), 0..4),
        shape(),
    )
        .prop_map(|(id, name, values, blob, ratio, tags, kind)| Payload {
            id,
            name,
            values,
            blob,
            ratio,
            tags,
            child: None,
            kind,
        })
}

fn payload() -> impl Strategy<Value = Payload> {
    (leaf(), prop::option::of(leaf())).prop_map(|(mut p, c)| {
        p.child = c.map(Box::new);
        p
    })
}

/// Any msgpack value (finite floats, so equality holds).
fn mp_value() -> impl Strategy<Value = rmpv::Value> {
    let leaf = prop_oneof![
        Just(rmpv::Value::Nil),
        any::<bool>().prop_map(rmpv::Value::from),
        any::<i64>().prop_map(rmpv::Value::from),
        any::<u64>().prop_map(rmpv::Value::from),
        (-1e300f64..1e300).prop_map(rmpv::Value::from),
        ".{0,30}".prop_map(rmpv::Value::from),
        prop::collection::vec(any::<u8>(), 0..40).prop_map(rmpv::Value::Binary),
    ];
    leaf.prop_recursive(4, 64, 8, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..8).prop_map(rmpv::Value::Array),
            prop::collection::vec((".{0,8}".prop_map(rmpv::Value::from), inner), 0..8)
                .prop_map(rmpv::Value::Map),
        ]
    })
}

fn json_value() -> impl Strategy<Value = serde_json::Value> {
    let leaf = prop_oneof![
        Just(serde_json::Value::Null),
        any::<bool>().prop_map(serde_json::Value::from),
        any::<i64>().prop_map(serde_json::Value::from),
        any::<u64>().prop_map(serde_json::Value::from),
        (-1e300f64..1e300).prop_map(serde_json::Value::from),
        ".{0,30}".prop_map(serde_json::Value::from),
    ];
    leaf.prop_recursive(4, 64, 8, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..8).prop_map(serde_json::Value::Array),
            prop::collection::btree_map(".{0,8}", inner, 0..8)
                .prop_map(|m| serde_json::Value::Object(m.into_iter().collect())),
        ]
    })
}

fn codec() -> impl Strategy<Value = AnyCodec> {
    prop_oneof![Just(AnyCodec::MSGPACK), Just(AnyCodec::JSON)]
}

fn compression() -> impl Strategy<Value = Compression> {
    prop_oneof![
        Just(Compression::default()),
        Just(Compression::none()),
        (0u32..=9).prop_map(|l| Compression::default().min_size(0).level(l)),
        Just(Compression::default().legacy_zlib(false)),
    ]
}

fn decode(framing: Framing, codec: &AnyCodec, msg: WireMessage) -> webmesh_codec::Frame {
    let (t, bytes) = match msg {
        WireMessage::Text(s) => (FrameType::Text, bytes::Bytes::from(s)),
        WireMessage::Binary(b) => (FrameType::Binary, bytes::Bytes::from(b)),
    };
    decode_frame(framing, codec, &Limits::default(), t, bytes).expect("decodes")
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn typed_payloads_round_trip(
        p in payload(), path in "/?.{0,40}", id in any::<u64>(), codec in codec(), comp in compression(),
    ) {
        for framing in [Framing::V1, Framing::Legacy] {
            let enc = FrameEncoder::new(framing, codec.clone(), comp);
            let f = decode(framing, &codec, enc.call(id, &path, &p).unwrap());
            prop_assert_eq!(f.path(), path.as_str());
            prop_assert_eq!(f.kind(), if framing == Framing::V1 { Kind::Call } else { Kind::Legacy });
            prop_assert_eq!(f.id(), if framing == Framing::V1 { id } else { 0 });
            prop_assert_eq!(&f.decode::<Payload>().unwrap(), &p);

            let f = decode(framing, &codec, enc.notify(&path, &p).unwrap());
            prop_assert_eq!(&f.decode::<Payload>().unwrap(), &p);

            let f = decode(framing, &codec, enc.reply(id, &path, &p).unwrap().unwrap());
            prop_assert_eq!(&f.decode::<Payload>().unwrap(), &p);
        }
    }

    #[test]
    fn dynamic_msgpack_values_round_trip(v in mp_value(), comp in compression(), id in any::<u64>()) {
        for framing in [Framing::V1, Framing::Legacy] {
            let enc = FrameEncoder::new(framing, AnyCodec::MSGPACK, comp);
            let f = decode(framing, &AnyCodec::MSGPACK, enc.call(id, "/v", &v).unwrap());
            prop_assert_eq!(f.decode::<rmpv::Value>().unwrap(), v.clone());
        }
    }

    #[test]
    fn dynamic_json_values_round_trip(v in json_value(), comp in compression()) {
        for framing in [Framing::V1, Framing::Legacy] {
            let enc = FrameEncoder::new(framing, AnyCodec::JSON, comp);
            let f = decode(framing, &AnyCodec::JSON, enc.call(1, "/v", &v).unwrap());
            prop_assert_eq!(f.decode::<serde_json::Value>().unwrap(), v.clone());
        }
    }

    #[test]
    fn error_bodies_round_trip(code in "[a-z_]{1,20}", message in ".{0,100}", data in prop::option::of(payload()), codec in codec()) {
        let enc = FrameEncoder::new(Framing::V1, codec.clone(), Compression::default());
        let msg = enc.error(9, &code, &message, data.as_ref()).unwrap().unwrap();
        let f = decode(Framing::V1, &codec, msg);
        prop_assert_eq!(f.kind(), Kind::Error);
        prop_assert_eq!(f.id(), 9);
        let (body, mismatch) = f.decode_error::<Payload>().unwrap();
        prop_assert!(mismatch.is_none());
        prop_assert_eq!(body.code.as_ref(), code.as_str());
        prop_assert_eq!(body.message.as_ref(), message.as_str());
        prop_assert_eq!(body.data, data);
    }
}

#[test]
fn legacy_replies_follow_0_1_2_none_semantics() {
    for codec in [AnyCodec::MSGPACK, AnyCodec::JSON] {
        let enc = FrameEncoder::new(Framing::Legacy, codec.clone(), Compression::default());
        assert!(enc.reply(0, "/a", &()).unwrap().is_none());
        assert!(enc.reply(0, "/a", &None::<u8>).unwrap().is_none());
        for msg in [
            enc.reply(0, "/a", &0).unwrap(),
            enc.reply(0, "/a", &false).unwrap(),
            enc.reply(0, "/a", "").unwrap(),
            enc.reply(0, "/a", &Vec::<u8>::new()).unwrap(),
        ] {
            assert!(decode(Framing::Legacy, &codec, msg.expect("falsy values are replied")).path() == "/a");
        }
        // v1 answers every call, null included.
        let enc = FrameEncoder::new(Framing::V1, codec.clone(), Compression::default());
        let f = decode(Framing::V1, &codec, enc.reply(3, "/a", &()).unwrap().unwrap());
        assert!(f.payload_is_nil());
        assert_eq!((f.kind(), f.id()), (Kind::Reply, 3));
    }
}

#[test]
fn v1_compresses_only_when_it_pays() {
    let enc = FrameEncoder::new(Framing::V1, AnyCodec::MSGPACK, Compression::default());
    let small = enc.call(1, "/a", &"x".repeat(100)).unwrap();
    assert_eq!(small.as_bytes()[0] & 0x10, 0, "under min_size: plain");
    let big = enc.call(1, "/a", &"x".repeat(10_000)).unwrap();
    assert_eq!(big.as_bytes()[0] & 0x10, 0x10, "compressible: deflated");
    assert!(big.len() < 500);
    // Incompressible data stays plain even above the threshold.
    let mut seed = 1u64;
    let noise: Vec<u8> = (0..10_000)
        .map(|_| {
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (seed >> 33) as u8
        })
        .collect();
    let msg = enc.call(1, "/a", serde_bytes::Bytes::new(&noise)).unwrap();
    assert_eq!(msg.as_bytes()[0] & 0x10, 0, "incompressible: plain");
    let f = decode(Framing::V1, &AnyCodec::MSGPACK, msg);
    assert_eq!(f.decode::<serde_bytes::ByteBuf>().unwrap().into_vec(), noise);
}

#[test]
fn third_party_codec_plugs_in() {
    use serde::de::DeserializeSeed;
    use webmesh_codec::{Codec, Error};

    /// msgpack with structs as arrays, under another name.
    struct Compact;
    impl Codec for Compact {
        const NAME: &'static str = "compact";
        const TEXT: bool = false;
        const NIL: &'static [u8] = &[0xc0];
        fn encode<T: Serialize + ?Sized>(value: &T, out: &mut Vec<u8>) -> Result<(), Error> {
            value
                .serialize(&mut rmp_serde::Serializer::new(out))
                .map_err(|e| Error::Encode { source: e.into() })
        }
        fn decode_seed<'de, S: DeserializeSeed<'de>>(bytes: &'de [u8], seed: S) -> Result<S::Value, Error> {
            seed.deserialize(&mut rmp_serde::Deserializer::from_read_ref(bytes))
                .map_err(|e| Error::Payload { source: e.into() })
        }
    }

    let codec = AnyCodec::of::<Compact>();
    assert_eq!(codec.name(), "compact");
    assert_eq!(webmesh_codec::subprotocol(&codec), "webmesh.v1.compact");
    let p = Payload {
        id: 1,
        name: "n".into(),
        values: vec![1, 2],
        blob: vec![3],
        ratio: 0.5,
        tags: BTreeMap::new(),
        child: None,
        kind: Shape::Rect { w: 1, h: 2 },
    };
    for framing in [Framing::V1, Framing::Legacy] {
        let enc = FrameEncoder::new(framing, codec.clone(), Compression::default().min_size(0));
        let f = decode(framing, &codec, enc.call(5, "/p", &p).unwrap());
        assert_eq!(f.path(), "/p");
        assert_eq!(f.decode::<Payload>().unwrap(), p);
        // The generic legacy split finds the path without a dedicated scanner.
        let f = decode(framing, &codec, enc.notify("/q", &()).unwrap());
        assert_eq!(f.path(), "/q");
        assert!(f.decode::<()>().is_ok());
    }
}
