//! When a v1 frame goes compressed: small payloads from `min_size` up whenever deflating shrinks
//! them; large ones only when a sample says it saves `min_saving` percent. Either way the
//! receiver decodes the same value.

use webmesh_codec::{
    decode_frame, AnyCodec, Compression, FrameEncoder, FrameType, Framing, Limits, WireMessage,
    COMPRESSION_SAMPLE_FROM,
};

/// The header bit that says the payload is deflated (docs/PROTOCOL.md §3).
const FLAG_COMPRESSED: u8 = 0x10;

/// `n` 20-bit numbers from a fixed xorshift sequence: msgpack writes most as 5 bytes, and zlib
/// level 1 saves ~14 % on them. (On full 32-bit values it saves nothing.)
fn numbers(n: usize) -> Vec<u32> {
    let mut x: u32 = 0x9e37_79b9;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x >> 12
        })
        .collect()
}

/// Log lines whose shapes repeat: zlib saves most of them.
fn logs(n: usize) -> Vec<String> {
    (0..n)
        .map(|i| {
            format!(
                "INFO billing request {} handled in {} ms",
                i * 7919 % 100_000,
                i % 250
            )
        })
        .collect()
}

fn encode<T: serde::Serialize>(compression: Compression, value: &T) -> Vec<u8> {
    let enc = FrameEncoder::new(Framing::V1, AnyCodec::MSGPACK, compression);
    match enc.notify("/p", value).unwrap() {
        WireMessage::Binary(b) => b,
        WireMessage::Text(_) => unreachable!("msgpack frames are binary"),
    }
}

fn decode<T: serde::de::DeserializeOwned>(frame: &[u8]) -> T {
    decode_frame(
        Framing::V1,
        &AnyCodec::MSGPACK,
        &Limits::default(),
        FrameType::Binary,
        bytes::Bytes::copy_from_slice(frame),
    )
    .unwrap()
    .decode()
    .unwrap()
}

fn compressed(frame: &[u8]) -> bool {
    frame[0] & FLAG_COMPRESSED != 0
}

#[test]
fn a_large_payload_that_barely_compresses_goes_uncompressed_by_default() {
    let value = numbers(13_098); // ~62 KiB of msgpack
    let frame = encode(Compression::default(), &value);
    assert!(!compressed(&frame), "a ~14 % saving is under the default 25 %");
    assert!(frame.len() > 60_000);
    assert_eq!(decode::<Vec<u32>>(&frame), value);
}

#[test]
fn with_min_saving_zero_whatever_shrinks_is_compressed() {
    let value = numbers(13_098);
    let frame = encode(Compression::default().min_saving(0), &value);
    assert!(compressed(&frame));
    assert!(frame.len() < 58_000, "{}", frame.len());
    assert_eq!(decode::<Vec<u32>>(&frame), value);
}

#[test]
fn a_large_compressible_payload_is_still_compressed() {
    let value = logs(3_000);
    let frame = encode(Compression::default(), &value);
    let plain = encode(Compression::none(), &value);
    assert!(plain.len() > COMPRESSION_SAMPLE_FROM);
    assert!(compressed(&frame));
    assert!(
        frame.len() * 3 < plain.len(),
        "{} vs {}",
        frame.len(),
        plain.len()
    );
    assert_eq!(decode::<Vec<String>>(&frame), value);
}

#[test]
fn a_payload_under_the_sample_size_is_compressed_whenever_it_shrinks() {
    // ~4 KiB: no sample; deflate saves a little, and that is kept.
    let value = numbers(800);
    let frame = encode(Compression::default(), &value);
    let plain = encode(Compression::none(), &value);
    assert!(plain.len() < COMPRESSION_SAMPLE_FROM);
    assert!(compressed(&frame) && frame.len() < plain.len());
    assert_eq!(decode::<Vec<u32>>(&frame), value);
}

/// A path whose sample said "not worth it" is not sampled for its next few large payloads (on
/// this thread): a compressible payload on that path goes uncompressed a few times, then
/// compressed again once sampled; other paths are judged on their own.
#[test]
fn a_no_from_the_sample_holds_for_a_few_payloads_of_that_path_only() {
    let enc = FrameEncoder::new(Framing::V1, AnyCodec::MSGPACK, Compression::default());
    let frame = |path: &str, value: &dyn erased::Value| match value.encode(&enc, path) {
        WireMessage::Binary(b) => b,
        WireMessage::Text(_) => unreachable!("msgpack frames are binary"),
    };
    let numbers = numbers(13_098);
    let logs = logs(2_000);
    assert!(!compressed(&frame("/p", &numbers)));
    assert!(compressed(&frame("/q", &logs)), "another path: sampled");
    let skipped = (0..32).take_while(|_| !compressed(&frame("/p", &logs))).count();
    assert_eq!(skipped, 15, "the next 15 large payloads of /p skip the sample");
    assert_eq!(decode::<Vec<String>>(&frame("/p", &logs)), logs);
}

/// Encodes values of different types through one closure.
mod erased {
    use webmesh_codec::{FrameEncoder, WireMessage};

    pub(super) trait Value {
        fn encode(&self, enc: &FrameEncoder, path: &str) -> WireMessage;
    }

    impl<T: serde::Serialize> Value for T {
        fn encode(&self, enc: &FrameEncoder, path: &str) -> WireMessage {
            enc.notify(path, self).unwrap()
        }
    }
}
