//! Prints the example frames of `docs/PROTOCOL.md`, in hex, from the real encoder.
//!
//! ```text
//! cargo run -p webmesh-codec --example frames
//! ```
#![allow(clippy::print_stdout)]

use webmesh_codec::{code, AnyCodec, Compression, FrameEncoder, Framing, WireMessage};

fn dump(label: &str, msg: &WireMessage) {
    match msg {
        WireMessage::Text(t) => println!("{label} (TEXT, {} chars):\n  {t}", t.len()),
        WireMessage::Binary(b) => {
            let hex: Vec<String> = b.iter().map(|x| format!("{x:02x}")).collect();
            println!("{label} (BINARY, {} bytes):\n  {}", b.len(), hex.join(" "));
        }
    }
}

fn main() -> Result<(), webmesh_codec::Error> {
    let legacy = FrameEncoder::new(Framing::Legacy, AnyCodec::MSGPACK, Compression::default());
    let legacy_plain = FrameEncoder::new(
        Framing::Legacy,
        AnyCodec::MSGPACK,
        Compression::default().legacy_zlib(false),
    );
    let legacy_json = FrameEncoder::new(Framing::Legacy, AnyCodec::JSON, Compression::default());
    let v1 = FrameEncoder::new(Framing::V1, AnyCodec::MSGPACK, Compression::default());
    let v1_json = FrameEncoder::new(Framing::V1, AnyCodec::JSON, Compression::default());

    dump(
        "legacy msgpack+zlib, {path: /echo, data: hi}",
        &legacy.call(0, "/echo", "hi")?,
    );
    dump(
        "legacy msgpack without zlib",
        &legacy_plain.call(0, "/echo", "hi")?,
    );
    dump("legacy json", &legacy_json.call(0, "/echo", "hi")?);
    dump("v1 msgpack CALL id 7 /echo \"hi\"", &v1.call(7, "/echo", "hi")?);
    dump(
        "v1 msgpack REPLY id 7 \"hi\"",
        &v1.reply(7, "/echo", "hi")?.expect("v1 replies"),
    );
    dump(
        "v1 msgpack ERROR id 7 not_found",
        &v1.error_plain(7, code::NOT_FOUND, "no route at /nope")?
            .expect("v1 errors"),
    );
    dump("v1 msgpack NOTIFY /tick 1", &v1.notify("/tick", &1)?);
    dump("v1 CANCEL id 7", &v1.cancel(7).expect("v1 cancels"));
    dump(
        "v1 msgpack CALL id 7 /echo \"hi\", budget 250 ms",
        &v1.call_within(7, "/echo", "hi", std::time::Duration::from_millis(250))?,
    );
    dump(
        "v1 json CALL id 300 /echo {\"a\":1}",
        &v1_json.call(300, "/echo", &serde_json::json!({"a": 1}))?,
    );
    let big = "ab".repeat(1000);
    dump(
        "v1 msgpack CALL id 8 /big, \"ab\" x 1000 (a 2003-byte msgpack string), compressed",
        &v1.call(8, "/big", &big)?,
    );
    Ok(())
}
