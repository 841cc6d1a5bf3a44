//! 0.1.2 TEXT frames (hex of zlib of msgpack, plain msgpack hex, JSON), both codecs configured:
//! decoding never panics and stays within the limits.
#![no_main]

use libfuzzer_sys::fuzz_target;
use webmesh_codec::{decode_frame, AnyCodec, FrameType, Framing, Limits};

fuzz_target!(|data: &[u8]| {
    let Some((&selector, rest)) = data.split_first() else { return };
    let codec = if selector & 1 == 0 { AnyCodec::MSGPACK } else { AnyCodec::JSON };
    // Text frames are UTF-8; half the time, feed the bytes as hex so the zlib and msgpack layers
    // are reached often.
    let text = if selector & 2 == 0 {
        match std::str::from_utf8(rest) {
            Ok(s) => s.to_owned(),
            Err(_) => return,
        }
    } else {
        rest.iter().map(|b| format!("{b:02x}")).collect()
    };
    let limits = Limits::default().max_frame_size(1 << 20).max_inflated_size(1 << 20);
    if let Ok(f) = decode_frame(Framing::Legacy, &codec, &limits, FrameType::Text, text.into()) {
        let _ = (f.path(), f.payload_is_nil(), f.was_compressed());
        let _ = f.decode::<rmpv::Value>();
        let _ = f.decode::<serde_json::Value>();
        let _ = f.decode::<(u8, String)>();
    }
});
