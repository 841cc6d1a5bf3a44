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

/// The bodies of §8, as webmesh-rs writes them (fields in this order, absent ones left out).
mod topic_bodies {
    use serde::Serialize;
    use std::collections::BTreeMap;

    #[derive(Serialize)]
    pub(crate) struct Since {
        pub(crate) epoch: u64,
        pub(crate) last: BTreeMap<&'static str, u64>,
    }

    #[derive(Serialize)]
    pub(crate) struct Subscribe {
        pub(crate) since: Since,
    }

    #[derive(Serialize)]
    pub(crate) struct Subscribed {
        pub(crate) epoch: u64,
        pub(crate) at: BTreeMap<&'static str, u64>,
    }

    #[derive(Serialize)]
    pub(crate) struct Lag {
        pub(crate) kind: &'static str,
        pub(crate) path: &'static str,
        pub(crate) missed: u64,
        pub(crate) upto: u64,
    }

    #[derive(Serialize)]
    pub(crate) struct Gap {
        pub(crate) kind: &'static str,
        pub(crate) path: &'static str,
        pub(crate) missed: u64,
        pub(crate) upto: u64,
        pub(crate) reason: &'static str,
    }
}

#[test]
fn every_topic_example_frame_is_the_encoders_output() {
    use std::collections::BTreeMap;
    use topic_bodies::*;
    use webmesh_codec::Kind;
    let v1 = FrameEncoder::new(Framing::V1, AnyCodec::MSGPACK, Compression::default());
    let empty: BTreeMap<&str, u64> = BTreeMap::new();
    let frames = [
        (
            "SUBSCRIBE",
            v1.v1_frame(Kind::Subscribe, 3, "/prices/*", &empty).unwrap(),
        ),
        (
            "REPLY to SUBSCRIBE",
            v1.reply(
                3,
                "",
                &Subscribed {
                    epoch: 5,
                    at: BTreeMap::from([("/prices/acme", 41)]),
                },
            )
            .unwrap()
            .unwrap(),
        ),
        ("MESSAGE", v1.topic_message(42, "/prices/acme", &12).unwrap()),
        ("UNSUBSCRIBE", v1.v1_frame(Kind::Unsubscribe, 3, "", &()).unwrap()),
        (
            "PUBLISH",
            v1.v1_frame(Kind::Publish, 4, "/prices/acme", &13).unwrap(),
        ),
        (
            "resubscribing SUBSCRIBE",
            v1.v1_frame(
                Kind::Subscribe,
                3,
                "/prices/*",
                &Subscribe {
                    since: Since {
                        epoch: 5,
                        last: BTreeMap::from([("/prices/acme", 42)]),
                    },
                },
            )
            .unwrap(),
        ),
        (
            "lag NOTICE",
            v1.v1_frame(
                Kind::Notice,
                0,
                "",
                &Lag {
                    kind: "lag",
                    path: "/prices/acme",
                    missed: 2,
                    upto: 44,
                },
            )
            .unwrap(),
        ),
        (
            "gap NOTICE",
            v1.v1_frame(
                Kind::Notice,
                3,
                "",
                &Gap {
                    kind: "gap",
                    path: "/p",
                    missed: 9,
                    upto: 51,
                    reason: "gone",
                },
            )
            .unwrap(),
        ),
    ];
    let missing: Vec<String> = frames
        .iter()
        .filter(|(_, m)| !DOC.contains(&shown(m)))
        .map(|(label, m)| format!("{label}: {}", shown(m)))
        .collect();
    assert!(
        missing.is_empty(),
        "PROTOCOL.md does not show:\n{}",
        missing.join("\n")
    );
}
