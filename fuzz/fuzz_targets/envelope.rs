//! The envelope parsers on raw bytes: the msgpack scanner, the one-pass legacy map split of both
//! codecs, and the typed decoders.
#![no_main]

use libfuzzer_sys::fuzz_target;
use webmesh_codec::{Codec, Json, MsgPack};

fuzz_target!(|data: &[u8]| {
    if let Ok(parts) = MsgPack::split_legacy(data) {
        let _ = format!("{parts:?}");
    }
    if let Ok(parts) = Json::split_legacy(data) {
        let _ = format!("{parts:?}");
    }
    // The scanner and rmp-serde must agree on what is well-formed msgpack.
    if let Ok(v) = MsgPack::decode::<rmpv::Value>(data) {
        let mut out = Vec::new();
        MsgPack::encode(&v, &mut out).expect("a decoded value encodes");
    }
    let _ = Json::decode::<serde_json::Value>(data);
    let _ = MsgPack::decode::<(u64, String, Vec<u8>)>(data);
});
