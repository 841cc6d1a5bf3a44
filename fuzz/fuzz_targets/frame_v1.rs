//! v1 BINARY frames, both codecs: decoding never panics, stays within the limits, and whatever
//! decodes re-encodes to a frame that decodes to the same thing.
#![no_main]

use libfuzzer_sys::fuzz_target;
use webmesh_codec::{decode_frame, AnyCodec, Compression, FrameEncoder, FrameType, Framing, Kind, Limits};

fuzz_target!(|data: &[u8]| {
    let Some((&selector, frame)) = data.split_first() else { return };
    let codec = if selector & 1 == 0 { AnyCodec::MSGPACK } else { AnyCodec::JSON };
    let limits = Limits::default().max_frame_size(1 << 20).max_inflated_size(1 << 20);
    let Ok(f) = decode_frame(Framing::V1, &codec, &limits, FrameType::Binary, bytes::Bytes::copy_from_slice(frame)) else {
        return;
    };
    let _ = (f.kind(), f.id(), f.path(), f.payload_is_nil(), f.payload_bytes());
    let _ = f.decode_error::<rmpv::Value>();
    let Ok(value) = f.decode::<rmpv::Value>() else { return };
    // Round trip through the encoder.
    let Some(bits) = f.kind().to_bits() else { return };
    if !matches!(f.kind(), Kind::Call | Kind::Notify | Kind::Reply) || bits > 2 {
        return;
    }
    let enc = FrameEncoder::new(Framing::V1, codec.clone(), Compression::default().min_size(selector as usize * 8));
    let Ok(msg) = (match f.kind() {
        Kind::Call => enc.call(f.id(), f.path(), &value),
        Kind::Notify => enc.notify(f.path(), &value),
        _ => enc.reply(f.id(), "", &value).map(|m| m.expect("v1 always replies")),
    }) else {
        return; // e.g. a map with non-string keys has no JSON form
    };
    let again = decode_frame(Framing::V1, &codec, &Limits::default(), FrameType::Binary, msg.as_bytes().to_vec().into())
        .expect("re-encoded frame decodes");
    assert_eq!(again.kind(), f.kind());
    assert_eq!(again.id(), if f.kind() == Kind::Notify { 0 } else { f.id() });
    let back: rmpv::Value = again.decode().expect("re-encoded payload decodes");
    if !has_nan(&value) {
        assert_eq!(back, value);
    }
});

fn has_nan(v: &rmpv::Value) -> bool {
    match v {
        rmpv::Value::F32(f) => f.is_nan(),
        rmpv::Value::F64(f) => f.is_nan(),
        rmpv::Value::Array(a) => a.iter().any(has_nan),
        rmpv::Value::Map(m) => m.iter().any(|(k, v)| has_nan(k) || has_nan(v)),
        _ => false,
    }
}
