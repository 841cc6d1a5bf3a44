//! Decoding limits and the compression policy.

/// Default [`Limits::max_frame_size`]: 16 MiB, tungstenite's own frame limit.
pub const DEFAULT_MAX_FRAME_SIZE: usize = 16 << 20;
/// Default [`Limits::max_inflated_size`]: 32 MiB, twice the frame limit, so any frame a peer may
/// send uncompressed may also be sent compressed.
pub const DEFAULT_MAX_INFLATED_SIZE: usize = 32 << 20;

/// Hard limits on what one received frame may cost.
///
/// # Examples
///
/// ```
/// let limits = webmesh_codec::Limits::default().max_frame_size(1 << 20);
/// assert_eq!(limits.max_inflated_size, webmesh_codec::DEFAULT_MAX_INFLATED_SIZE);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct Limits {
    /// Largest frame accepted, in bytes as received (hex text counts two characters per byte).
    /// Default [`DEFAULT_MAX_FRAME_SIZE`].
    pub max_frame_size: usize,
    /// Largest payload a compressed frame may inflate to, checked while inflating.
    /// Default [`DEFAULT_MAX_INFLATED_SIZE`].
    pub max_inflated_size: usize,
}

impl Limits {
    /// Sets [`max_frame_size`](Self::max_frame_size).
    #[must_use]
    pub fn max_frame_size(mut self, bytes: usize) -> Self {
        self.max_frame_size = bytes;
        self
    }

    /// Sets [`max_inflated_size`](Self::max_inflated_size).
    #[must_use]
    pub fn max_inflated_size(mut self, bytes: usize) -> Self {
        self.max_inflated_size = bytes;
        self
    }
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_frame_size: DEFAULT_MAX_FRAME_SIZE,
            max_inflated_size: DEFAULT_MAX_INFLATED_SIZE,
        }
    }
}

/// Default [`Compression::min_size`]: payloads under 1 KiB go uncompressed in v1 frames.
pub const DEFAULT_COMPRESSION_MIN_SIZE: usize = 1024;
/// Default [`Compression::level`]: 1, zlib's fastest level.
pub const DEFAULT_COMPRESSION_LEVEL: u32 = 1;
/// Default [`Compression::min_saving`]: a large payload is deflated only if a sample of it
/// shrinks by at least 25 %.
pub const DEFAULT_COMPRESSION_MIN_SAVING: u8 = 25;
/// Payloads from this size up are tried on a sample before they are deflated whole (see
/// [`Compression::min_saving`]).
pub const COMPRESSION_SAMPLE_FROM: usize = 8 * 1024;
/// The size of that sample, taken from the middle of the payload.
pub const COMPRESSION_SAMPLE: usize = 2 * 1024;

/// When and how hard to compress outgoing frames.
///
/// In v1 frames compression is decided per message: a payload of at least
/// [`min_size`](Self::min_size) bytes is deflated, and sent deflated only if that made it
/// smaller (a flag in the frame header says so). A payload of [`COMPRESSION_SAMPLE_FROM`] bytes
/// or more is first deflated on a [`COMPRESSION_SAMPLE`]-byte sample: if that saves less than
/// [`min_saving`](Self::min_saving) percent (numbers, already compressed or random bytes), the
/// payload goes uncompressed and the rest is never deflated, so compression costs CPU only where
/// it pays. After such a "no", the next 15 large payloads of the same kind on the same route
/// (its calls, its replies or its topic messages) sent by the same thread go uncompressed
/// without a sample (a route's payload types are fixed, so their compressibility changes little
/// between calls); then a sample judges again. Legacy msgpack
/// frames are always deflated, as 0.1.2 expects, unless [`legacy_zlib`](Self::legacy_zlib) is
/// off.
///
/// # Examples
///
/// ```
/// use webmesh_codec::Compression;
/// let never = Compression::none();
/// let small_too = Compression::default().min_size(0).level(6);
/// # let _ = (never, small_too);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct Compression {
    /// zlib level, 0 (store) to 9 (smallest). Default [`DEFAULT_COMPRESSION_LEVEL`].
    pub level: u32,
    /// Smallest v1 payload that is compressed; `usize::MAX` turns v1 compression off.
    /// Default [`DEFAULT_COMPRESSION_MIN_SIZE`].
    pub min_size: usize,
    /// Deflate legacy msgpack frames (0.1.2's default `MessagePackSerializer(compressor=zlib)`).
    /// Turn off only for a peer built with `compressor=None`. Default `true`.
    pub legacy_zlib: bool,
    /// Least saving, in percent, that makes deflating a large v1 payload worth its CPU, judged on
    /// a sample (see above). 0 deflates whatever shrinks. Default
    /// [`DEFAULT_COMPRESSION_MIN_SAVING`].
    pub min_saving: u8,
}

impl Compression {
    /// Never compress v1 frames (legacy msgpack frames are still deflated).
    pub fn none() -> Self {
        Compression {
            min_size: usize::MAX,
            ..Self::default()
        }
    }

    /// Sets [`level`](Self::level).
    #[must_use]
    pub fn level(mut self, level: u32) -> Self {
        self.level = level.min(9);
        self
    }

    /// Sets [`min_size`](Self::min_size).
    #[must_use]
    pub fn min_size(mut self, bytes: usize) -> Self {
        self.min_size = bytes;
        self
    }

    /// Sets [`legacy_zlib`](Self::legacy_zlib).
    #[must_use]
    pub fn legacy_zlib(mut self, on: bool) -> Self {
        self.legacy_zlib = on;
        self
    }

    /// Sets [`min_saving`](Self::min_saving), in percent (at most 100).
    #[must_use]
    pub fn min_saving(mut self, percent: u8) -> Self {
        self.min_saving = percent.min(100);
        self
    }
}

impl Default for Compression {
    fn default() -> Self {
        Compression {
            level: DEFAULT_COMPRESSION_LEVEL,
            min_size: DEFAULT_COMPRESSION_MIN_SIZE,
            legacy_zlib: true,
            min_saving: DEFAULT_COMPRESSION_MIN_SAVING,
        }
    }
}
