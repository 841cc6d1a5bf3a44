//! `webmesh decode` and `webmesh encode`: captured frames to JSON and back.

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use bytes::Bytes;
use clap::{Args, ValueEnum};
use rmpv::Value;
use webmesh::codec::{self, AnyCodec, Compression, Frame, FrameEncoder, FrameType, Framing, Kind, Limits};

use crate::conn::CodecArg;
use crate::output::Failure;

/// Which framing a captured frame is in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum FramingArg {
    /// Guess: JSON text or hex of zlib/msgpack is 0.1.2; other hex, and base64, is v1.
    Auto,
    /// A 0.1.2 text frame.
    Legacy,
    /// A v1 binary frame, as hex or base64.
    V1,
}

#[derive(Debug, Args)]
pub(crate) struct DecodeArgs {
    /// The frame: a 0.1.2 text frame (hex, or JSON), or a v1 binary frame as hex or base64.
    /// `-` or nothing reads it from stdin.
    pub(crate) frame: Option<String>,
    /// The framing.
    #[arg(long, value_enum, default_value_t = FramingArg::Auto)]
    pub(crate) framing: FramingArg,
    /// The codec of a v1 frame (the connection's; a frame does not say). 0.1.2 frames tell.
    #[arg(long, value_enum, default_value_t = CodecArg::Msgpack)]
    pub(crate) codec: CodecArg,
}

/// What a v1 frame is, for `encode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum KindArg {
    Call,
    Notify,
    Reply,
    Error,
    Subscribe,
    Unsubscribe,
    Publish,
}

#[derive(Debug, Args)]
pub(crate) struct EncodeArgs {
    /// The path.
    pub(crate) path: String,
    /// The data, as JSON (lossless form); `-` reads stdin; nothing is null.
    #[arg(allow_hyphen_values = true)]
    pub(crate) json: Option<String>,
    /// A 0.1.2 text frame instead of a v1 frame.
    #[arg(long)]
    pub(crate) legacy: bool,
    /// The codec.
    #[arg(long, value_enum, default_value_t = CodecArg::Msgpack)]
    pub(crate) codec: CodecArg,
    /// 0.1.2 msgpack without zlib (a `MessagePackSerializer(compressor=None)` peer).
    #[arg(long)]
    pub(crate) no_zlib: bool,
    /// The kind of a v1 frame.
    #[arg(long, value_enum, default_value_t = KindArg::Call)]
    pub(crate) kind: KindArg,
    /// The id of a v1 frame.
    #[arg(long, default_value_t = 1)]
    pub(crate) id: u64,
    /// Print a v1 frame as base64 instead of hex.
    #[arg(long)]
    pub base64: bool,
}

/// Which layer of a frame failed.
fn layer(e: &codec::Error) -> &'static str {
    use codec::Error as E;
    match e {
        E::InvalidHex { .. } | E::OddHexLength { .. } => "hex",
        E::NotZlib | E::TruncatedZlib | E::CorruptZlib(_) | E::InflatedTooLarge { .. } => "zlib",
        E::Malformed { codec, .. } => codec,
        _ => "envelope",
    }
}

fn bad(layer: &str, what: impl std::fmt::Display) -> Failure {
    Failure::bad_input(format!("{layer}: {what}"))
}

pub(crate) fn decode(args: &DecodeArgs) -> Result<Value, Failure> {
    let text = match args.frame.as_deref() {
        None | Some("-") => {
            let mut s = String::new();
            std::io::Read::read_to_string(&mut std::io::stdin(), &mut s)
                .map_err(|e| Failure::bad_input(format!("reading stdin: {e}")))?;
            s
        }
        Some(t) => t.to_owned(),
    };
    let text = text.trim();
    if text.is_empty() {
        return Err(Failure::bad_input("no frame given"));
    }
    let framing = match args.framing {
        FramingArg::Auto => guess(text),
        other => other,
    };
    let limits = Limits::default();
    match framing {
        FramingArg::Legacy => {
            let codec = if text.starts_with('{') {
                AnyCodec::JSON
            } else {
                AnyCodec::MSGPACK
            };
            let bytes = Bytes::copy_from_slice(text.as_bytes());
            let frame = codec::decode_frame(Framing::Legacy, &codec, &limits, FrameType::Text, bytes)
                .map_err(|e| bad(layer(&e), e))?;
            let data = payload(&frame)?;
            Ok(Value::Map(vec![
                ("path".into(), frame.path().into()),
                ("data".into(), data),
            ]))
        }
        FramingArg::V1 | FramingArg::Auto => {
            let mut read_as = "";
            let bytes = unhex(text).or_else(|hex_error| {
                read_as = " (read as base64: the text is not hex)";
                BASE64
                    .decode(text)
                    .map_err(|b64| bad("hex", format!("{hex_error} (and not base64 either: {b64})")))
            })?;
            let frame = codec::decode_frame(
                Framing::V1,
                &args.codec.codec(),
                &limits,
                FrameType::Binary,
                Bytes::from(bytes),
            )
            .map_err(|e| bad(layer(&e), format!("{e}{read_as}")))?;
            v1_value(&frame)
        }
    }
}

/// The framing of a frame, from its first bytes.
fn guess(text: &str) -> FramingArg {
    if text.starts_with('{') {
        return FramingArg::Legacy;
    }
    match unhex(text).ok().and_then(|b| b.first().copied()) {
        // zlib (0x78), or a msgpack map (fixmap, map16, map32): 0.1.2's hex text.
        Some(0x78 | 0x80..=0x8f | 0xde | 0xdf) => FramingArg::Legacy,
        // Not hex: a 0.1.2 frame with a typo is still hex-ish; report hex errors for it.
        None if text.chars().all(|c| c.is_ascii_alphanumeric()) && !text.len().is_multiple_of(4) => {
            FramingArg::Legacy
        }
        _ => FramingArg::V1,
    }
}

fn unhex(text: &str) -> Result<Vec<u8>, String> {
    if !text.len().is_multiple_of(2) {
        return Err(format!("hex text has odd length {}", text.len()));
    }
    (0..text.len())
        .step_by(2)
        .map(|i| {
            text.get(i..i + 2)
                .and_then(|pair| u8::from_str_radix(pair, 16).ok())
                .ok_or_else(|| format!("invalid hex digit at offset {i}"))
        })
        .collect()
}

/// A frame's payload as a value: exactly as sent for msgpack (bin, ext and all).
fn payload(frame: &Frame) -> Result<Value, Failure> {
    match frame.payload_bytes() {
        None => Ok(Value::Nil),
        Some([]) => Ok(Value::Nil),
        Some(bytes) if *frame.codec() == AnyCodec::MSGPACK => {
            let mut rest = bytes;
            let v = rmpv::decode::read_value(&mut rest).map_err(|e| bad("msgpack", e))?;
            if !rest.is_empty() {
                return Err(bad("msgpack", format!("{} bytes after the value", rest.len())));
            }
            Ok(v)
        }
        Some(_) => frame.decode::<Value>().map_err(|e| bad(layer(&e), e)),
    }
}

fn kind_name(kind: Kind) -> String {
    match kind {
        Kind::Call => "call".into(),
        Kind::Notify => "notify".into(),
        Kind::Reply => "reply".into(),
        Kind::Error => "error".into(),
        Kind::Cancel => "cancel".into(),
        Kind::Subscribe => "subscribe".into(),
        Kind::Unsubscribe => "unsubscribe".into(),
        Kind::Publish => "publish".into(),
        Kind::TopicMessage => "topic_message".into(),
        Kind::Notice => "notice".into(),
        Kind::Legacy => "legacy".into(),
        Kind::Unknown(bits) => format!("unknown({bits})"),
        _ => format!("{kind:?}").to_lowercase(),
    }
}

fn v1_value(frame: &Frame) -> Result<Value, Failure> {
    let mut out: Vec<(Value, Value)> = vec![
        ("kind".into(), kind_name(frame.kind()).into()),
        ("id".into(), frame.id().into()),
        ("path".into(), frame.path().into()),
    ];
    if frame.was_compressed() {
        out.push(("compressed".into(), true.into()));
    }
    if let Some(budget) = frame.budget() {
        out.push(("deadline_ms".into(), (budget.as_millis() as u64).into()));
    }
    if let Some(seq) = frame.seq() {
        out.push(("seq".into(), seq.into()));
    }
    out.push(("data".into(), payload(frame)?));
    Ok(Value::Map(out))
}

pub(crate) fn encode(args: &EncodeArgs) -> Result<String, Failure> {
    let value = crate::conn::read_json(args.json.as_deref())?;
    let codec = args.codec.codec();
    if args.legacy {
        let compression = Compression::default().legacy_zlib(!args.no_zlib);
        let enc = FrameEncoder::new(Framing::Legacy, codec, compression);
        let msg = enc.call(0, &args.path, &value).map_err(|e| bad("encode", e))?;
        return Ok(String::from_utf8_lossy(msg.as_bytes()).into_owned());
    }
    let enc = FrameEncoder::new(Framing::V1, codec, Compression::default());
    let kind = match args.kind {
        KindArg::Call => Kind::Call,
        KindArg::Notify => Kind::Notify,
        KindArg::Reply => Kind::Reply,
        KindArg::Error => Kind::Error,
        KindArg::Subscribe => Kind::Subscribe,
        KindArg::Unsubscribe => Kind::Unsubscribe,
        KindArg::Publish => Kind::Publish,
    };
    let msg = enc
        .v1_frame(kind, args.id, &args.path, &value)
        .map_err(|e| bad("encode", e))?;
    let bytes = msg.as_bytes();
    Ok(if args.base64 {
        BASE64.encode(bytes)
    } else {
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    })
}
