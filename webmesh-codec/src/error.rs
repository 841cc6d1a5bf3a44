//! The one error type of this crate.

/// A boxed error from a serializer (rmp-serde, serde_json or a third-party codec).
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Everything that can go wrong while encoding or decoding a frame.
///
/// Each malformed-input class has its own variant so that a runtime can pick a reply (or a close
/// reason) per class and tests can assert the exact class. No input makes this crate panic.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The frame is bigger than [`Limits::max_frame_size`](crate::Limits::max_frame_size).
    #[error("frame of {size} bytes exceeds the limit of {max} bytes")]
    FrameTooLarge {
        /// Size of the offending frame in bytes.
        size: usize,
        /// The configured limit.
        max: usize,
    },
    /// Inflating the frame would exceed
    /// [`Limits::max_inflated_size`](crate::Limits::max_inflated_size) (a zlib bomb, or just a big
    /// message). Detected while inflating: at most `max + 1` bytes are ever allocated.
    #[error("payload inflates past the limit of {max} bytes")]
    InflatedTooLarge {
        /// The configured limit.
        max: usize,
    },
    /// A legacy msgpack frame holds a character that is not a hex digit.
    #[error("invalid hex digit {byte:#04x} at offset {offset}")]
    InvalidHex {
        /// Offset of the first bad character in the frame text.
        offset: usize,
        /// The bad byte.
        byte: u8,
    },
    /// A legacy msgpack frame holds an odd number of hex digits.
    #[error("hex text has odd length {len}")]
    OddHexLength {
        /// Length of the frame text.
        len: usize,
    },
    /// Data that should be a zlib stream does not start with a valid zlib header.
    #[error("not a zlib stream (bad header)")]
    NotZlib,
    /// The zlib stream ends before its end-of-stream marker and checksum.
    #[error("zlib stream is truncated")]
    TruncatedZlib,
    /// The zlib stream is corrupt (bad block, bad checksum, trailing bytes).
    #[error("zlib stream is corrupt: {0}")]
    CorruptZlib(String),
    /// The envelope bytes are not valid in the codec (not msgpack, not JSON, truncated...).
    #[error("malformed {codec} data: {source}")]
    Malformed {
        /// Name of the codec that rejected the data.
        codec: &'static str,
        /// What the codec said.
        #[source]
        source: BoxError,
    },
    /// A legacy envelope decoded to something other than a map.
    #[error("envelope is not a map")]
    NotAMap,
    /// A legacy envelope map has no `"path"` key.
    #[error("envelope has no \"path\" field")]
    MissingPath,
    /// A legacy envelope's `"path"` is not a string.
    #[error("envelope \"path\" is not a string")]
    PathNotString,
    /// The path is not valid UTF-8.
    #[error("path is not valid UTF-8")]
    PathNotUtf8,
    /// The envelope is fine but its payload does not fit the type it is decoded into.
    #[error("payload does not match the expected type: {source}")]
    Payload {
        /// What the codec said.
        #[source]
        source: BoxError,
    },
    /// A value could not be encoded (for example a map with non-string keys in JSON).
    #[error("failed to encode: {source}")]
    Encode {
        /// What the codec said.
        #[source]
        source: BoxError,
    },
    /// A v1 binary frame ends inside its header.
    #[error("frame header is truncated ({0})")]
    TruncatedHeader(&'static str),
    /// A v1 frame sets flag bits this version does not define.
    #[error("reserved flag bits set in frame header: {0:#04x}")]
    ReservedFlags(u8),
    /// A v1 varint is longer than 10 bytes or overflows 64 bits.
    #[error("varint in frame header overflows 64 bits")]
    VarintOverflow,
    /// A frame came in the wrong WebSocket frame type for the framing (text in v1, binary in legacy).
    #[error("{got} frame where the {framing} framing expects {expected}")]
    WrongFrameType {
        /// The framing in use.
        framing: &'static str,
        /// "text" or "binary".
        got: &'static str,
        /// "text" or "binary".
        expected: &'static str,
    },
}

impl Error {
    /// True when the error is about the payload's type, not about the frame's shape: the frame was
    /// read fully and its path and id are known.
    pub fn is_payload_mismatch(&self) -> bool {
        matches!(self, Error::Payload { .. })
    }

    pub(crate) fn malformed(codec: &'static str, source: impl Into<BoxError>) -> Self {
        Error::Malformed {
            codec,
            source: source.into(),
        }
    }

    pub(crate) fn payload(source: impl Into<BoxError>) -> Self {
        Error::Payload {
            source: source.into(),
        }
    }

    pub(crate) fn encode(source: impl Into<BoxError>) -> Self {
        Error::Encode {
            source: source.into(),
        }
    }
}

/// Result alias of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;
