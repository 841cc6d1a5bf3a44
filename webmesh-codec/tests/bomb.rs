//! Counting allocator below needs `unsafe`: it only forwards to `System`.
#![allow(unsafe_code)]

//! A zlib bomb (1 GiB of zeros, deflated to about 1 MiB) is rejected while it inflates, and
//! decoding it never holds more than the configured limit plus the frame itself.
//!
//! This test binary counts every heap allocation to measure the peak.

use std::alloc::{GlobalAlloc, Layout, System};
use std::io::Write;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};

use webmesh_codec::{decode_frame, AnyCodec, Error, FrameType, Framing, Limits};

struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let live = LIVE.fetch_add(layout.size(), Relaxed) + layout.size();
        PEAK.fetch_max(live, Relaxed);
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size(), Relaxed);
        unsafe { System.dealloc(ptr, layout) }
    }
    // Growth goes through the system's realloc (in place, or mremap for large blocks), so count
    // the size change, as the process's memory sees it.
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if new_size >= layout.size() {
            let live = LIVE.fetch_add(new_size - layout.size(), Relaxed) + new_size - layout.size();
            PEAK.fetch_max(live, Relaxed);
        } else {
            LIVE.fetch_sub(layout.size() - new_size, Relaxed);
        }
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

const GIB: usize = 1 << 30;

/// zlib of `total` zeros, written 1 MiB at a time.
fn bomb(total: usize) -> Vec<u8> {
    let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::best());
    let chunk = vec![0u8; 1 << 20];
    for _ in 0..total / chunk.len() {
        z.write_all(&chunk).unwrap();
    }
    z.finish().unwrap()
}

/// Peak bytes allocated above what was live before `f` ran.
fn peak_during(f: impl FnOnce()) -> usize {
    let before = LIVE.load(Relaxed);
    PEAK.store(before, Relaxed);
    f();
    PEAK.load(Relaxed) - before
}

#[test]
fn one_gib_bomb_is_rejected_within_the_limit() {
    let z = bomb(GIB);
    assert!(z.len() < 2 << 20, "bomb is {} bytes", z.len());
    let max = 8 << 20;
    let limits = Limits::default().max_inflated_size(max);

    // Legacy: a TEXT frame of hex, as 0.1.2 would carry it.
    let text: String = z.iter().map(|b| format!("{b:02x}")).collect();
    let text_len = text.len();
    let frame = bytes::Bytes::from(text);
    let peak = peak_during(|| {
        let err = decode_frame(
            Framing::Legacy,
            &AnyCodec::MSGPACK,
            &limits,
            FrameType::Text,
            frame.clone(),
        )
        .unwrap_err();
        assert!(
            matches!(err, Error::InflatedTooLarge { max: m } if m == max),
            "{err}"
        );
    });
    // The hex-decoded stream (half the text) plus at most max + 1 inflated bytes, plus zlib state.
    let bound = text_len / 2 + max + (1 << 20);
    assert!(peak <= bound, "legacy peak {peak} > {bound}");

    // v1: a BINARY frame with the compressed flag.
    let mut v1 = vec![0x10, 0x01, 0x02, b'/', b'b'];
    v1.extend_from_slice(&z);
    let v1 = bytes::Bytes::from(v1);
    let peak = peak_during(|| {
        let err = decode_frame(
            Framing::V1,
            &AnyCodec::MSGPACK,
            &limits,
            FrameType::Binary,
            v1.clone(),
        )
        .unwrap_err();
        assert!(matches!(err, Error::InflatedTooLarge { .. }), "{err}");
    });
    let bound = max + (1 << 20);
    assert!(peak <= bound, "v1 peak {peak} > {bound}");
}
