//! The hot path of [`MsgPack`](super::MsgPack): a serde serializer and deserializer that write
//! and read msgpack straight from a `Vec<u8>` and a slice, producing the same bytes and the same
//! values as rmp-serde (structs as maps, its enum and option conventions, minimal integer
//! widths).
//!
//! rmp-serde goes through `io::Write`/`io::Read` for every marker and every number, and its
//! decoder re-dispatches each number through a generic marker reader: on a 64 KiB payload of
//! numbers its encode and decode were ~60 % of a call's CPU. These two do the same work with
//! a bounds check and a copy.
//!
//! They cover what typed payloads use. Anything else, and every error, is [`Unsupported`]: the
//! caller then runs rmp-serde from the start, so rare shapes (msgpack ext values, 128-bit
//! integers, sequences of unknown length) and all error messages stay exactly rmp-serde's. The
//! tests check both directions against rmp-serde on generated values and bytes.

use std::fmt;

use serde::de::{self, DeserializeSeed, Visitor};
use serde::ser::{self, Serialize};

/// The name rmp-serde gives the newtype struct that carries a msgpack ext value.
const EXT_STRUCT: &str = "_ExtStruct";

/// Not handled here (or not valid): run rmp-serde instead. It carries nothing, so building and
/// dropping one costs nothing.
#[derive(Debug)]
pub(crate) struct Unsupported;

impl fmt::Display for Unsupported {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("not on the fast msgpack path")
    }
}

impl std::error::Error for Unsupported {}

impl ser::Error for Unsupported {
    fn custom<T: fmt::Display>(_: T) -> Self {
        Unsupported
    }
}

impl de::Error for Unsupported {
    fn custom<T: fmt::Display>(_: T) -> Self {
        Unsupported
    }
}

type Result<T> = std::result::Result<T, Unsupported>;

/// Appends `value` to `out` as rmp-serde's `Serializer::new(out).with_struct_map()` would. On
/// `Err`, `out` may hold part of the value: the caller truncates it.
pub(crate) fn encode<T: Serialize + ?Sized>(value: &T, out: &mut Vec<u8>) -> Result<()> {
    value.serialize(&mut Encoder { out })
}

/// Decodes a `T` from all of `bytes` as rmp-serde's `from_read_ref` with a depth limit of
/// `max_depth` would, or `None` when rmp-serde must say what is wrong (or decode it).
pub(crate) fn decode<'de, T: de::Deserialize<'de>>(bytes: &'de [u8], max_depth: usize) -> Option<T> {
    let mut de = Decoder {
        rest: bytes,
        depth: max_depth.min(usize::from(u16::MAX)) as u16,
        unread: 0,
    };
    let value = T::deserialize(&mut de).ok()?;
    de.rest.is_empty().then_some(value)
}

struct Encoder<'a> {
    out: &'a mut Vec<u8>,
}

impl Encoder<'_> {
    /// A number or a boolean in its smallest form, as rmp-serde writes it (non-negative
    /// integers as unsigned ones).
    #[inline(always)]
    fn scalar(&mut self, scalar: Scalar) {
        let mut block = [0; Scalar::MAX];
        let n = scalar.write(&mut block);
        // The whole block, then the unused end cut off: a copy of a known size is a few moves,
        // where one of `n` bytes is a call to `memcpy`.
        let len = self.out.len();
        self.out.extend_from_slice(&block);
        self.out.truncate(len + n);
    }

    /// A length under one of three forms: `fix` (its low bits hold the length, below `fix_max`),
    /// then the 16- and 32-bit markers. `eight` is the 8-bit marker of str and bin, if any.
    #[inline(always)]
    fn len(&mut self, len: usize, fix: Option<(u8, usize)>, eight: Option<u8>, wide: [u8; 2]) -> Result<()> {
        let len = u32::try_from(len).map_err(|_| Unsupported)?;
        match fix {
            Some((marker, max)) if (len as usize) < max => self.out.push(marker | len as u8),
            _ => match eight {
                Some(marker) if len < 256 => self.out.extend_from_slice(&[marker, len as u8]),
                _ if len < 65_536 => {
                    let b = (len as u16).to_be_bytes();
                    self.out.extend_from_slice(&[wide[0], b[0], b[1]]);
                }
                _ => {
                    let b = len.to_be_bytes();
                    self.out.extend_from_slice(&[wide[1], b[0], b[1], b[2], b[3]]);
                }
            },
        }
        Ok(())
    }

    #[inline(always)]
    fn str(&mut self, s: &str) -> Result<()> {
        self.len(s.len(), Some((0xa0, 32)), Some(0xd9), [0xda, 0xdb])?;
        self.out.extend_from_slice(s.as_bytes());
        Ok(())
    }

    #[inline]
    fn array(&mut self, len: usize) -> Result<()> {
        self.len(len, Some((0x90, 16)), None, [0xdc, 0xdd])
    }

    #[inline]
    fn map(&mut self, len: usize) -> Result<()> {
        self.len(len, Some((0x80, 16)), None, [0xde, 0xdf])
    }

    /// An enum variant with data: a map of one entry, from its name to the data.
    fn variant(&mut self, variant: &str) -> Result<()> {
        self.out.push(0x81);
        self.str(variant)
    }
}

/// Number and boolean methods of the serializer: widened to 64 bits, then written in their
/// smallest form.
/// Calls `$m` with the serializer methods that take a number or a boolean and the [`Scalar`]
/// each one makes: one list for the encoder's methods and for [`ScalarOf`]'s.
macro_rules! with_scalar_methods {
    ($m:ident) => {
        $m!(
            serialize_bool(bool) => Bool,
            serialize_i8(i8) => Int,
            serialize_i16(i16) => Int,
            serialize_i32(i32) => Int,
            serialize_i64(i64) => Int,
            serialize_u8(u8) => Uint,
            serialize_u16(u16) => Uint,
            serialize_u32(u32) => Uint,
            serialize_u64(u64) => Uint,
            serialize_f32(f32) => F32,
            serialize_f64(f64) => F64
        );
    };
}

macro_rules! scalars {
    ($($method:ident($t:ty) => $variant:ident),*) => {$(
        #[inline]
        fn $method(self, v: $t) -> Result<()> {
            self.scalar(Scalar::$variant(v.into()));
            Ok(())
        }
    )*};
}

impl<'a, 'b> ser::Serializer for &'b mut Encoder<'a> {
    type Ok = ();
    type Error = Unsupported;
    type SerializeSeq = Self;
    type SerializeTuple = Self;
    type SerializeTupleStruct = Self;
    type SerializeTupleVariant = Self;
    type SerializeMap = Self;
    type SerializeStruct = Self;
    type SerializeStructVariant = Self;

    fn is_human_readable(&self) -> bool {
        false
    }

    with_scalar_methods!(scalars);

    fn serialize_char(self, v: char) -> Result<()> {
        self.str(v.encode_utf8(&mut [0; 4]))
    }

    #[inline]
    fn serialize_str(self, v: &str) -> Result<()> {
        self.str(v)
    }

    fn serialize_bytes(self, v: &[u8]) -> Result<()> {
        self.len(v.len(), None, Some(0xc4), [0xc5, 0xc6])?;
        self.out.extend_from_slice(v);
        Ok(())
    }

    fn serialize_none(self) -> Result<()> {
        self.out.push(0xc0);
        Ok(())
    }

    fn serialize_some<T: Serialize + ?Sized>(self, value: &T) -> Result<()> {
        value.serialize(self)
    }

    fn serialize_unit(self) -> Result<()> {
        self.out.push(0xc0);
        Ok(())
    }

    fn serialize_unit_struct(self, _: &'static str) -> Result<()> {
        self.out.push(0x90);
        Ok(())
    }

    fn serialize_unit_variant(self, _: &'static str, _: u32, variant: &'static str) -> Result<()> {
        self.str(variant)
    }

    fn serialize_newtype_struct<T: Serialize + ?Sized>(self, name: &'static str, value: &T) -> Result<()> {
        if name == EXT_STRUCT {
            return Err(Unsupported);
        }
        value.serialize(self)
    }

    fn serialize_newtype_variant<T: Serialize + ?Sized>(
        self,
        _: &'static str,
        _: u32,
        variant: &'static str,
        value: &T,
    ) -> Result<()> {
        self.variant(variant)?;
        value.serialize(self)
    }

    /// A sequence whose elements are numbers or booleans is written through a local block of
    /// bytes, each element asked for its value by [`Scalar`]'s serializer: the block's fill
    /// level stays in a register. Through `Vec::extend_from_slice` on the buffer behind this
    /// encoder's reference, the compiler stored the buffer's length and read it back after
    /// every element (it cannot tell the bytes written from the length), a store-to-load wait
    /// per number. The first element that is something else ends the asking: it and the rest
    /// are written as `serialize_seq` writes them.
    fn collect_seq<I>(self, iter: I) -> Result<()>
    where
        I: IntoIterator,
        I::Item: Serialize,
    {
        let iter = iter.into_iter();
        // As serde's own `collect_seq`: a length only when the iterator knows it exactly.
        let len = match iter.size_hint() {
            (lo, Some(hi)) if lo == hi => lo,
            _ => return Err(Unsupported),
        };
        self.array(len)?;
        let mut block = [0u8; 512];
        let mut used = 0;
        let mut scalars = true;
        for item in iter {
            if scalars {
                if let Ok(scalar) = item.serialize(ScalarOf) {
                    if used > block.len() - Scalar::MAX {
                        self.out.extend_from_slice(&block[..used]);
                        used = 0;
                    }
                    used += scalar.write(&mut block[used..used + Scalar::MAX]);
                    continue;
                }
                scalars = false;
                self.out.extend_from_slice(&block[..used]);
            }
            item.serialize(&mut *self)?;
        }
        if scalars {
            self.out.extend_from_slice(&block[..used]);
        }
        Ok(())
    }

    fn serialize_seq(self, len: Option<usize>) -> Result<Self> {
        // Unknown lengths: rmp-serde buffers the elements to count them.
        self.array(len.ok_or(Unsupported)?)?;
        Ok(self)
    }

    fn serialize_tuple(self, len: usize) -> Result<Self> {
        self.array(len)?;
        Ok(self)
    }

    fn serialize_tuple_struct(self, _: &'static str, len: usize) -> Result<Self> {
        self.array(len)?;
        Ok(self)
    }

    fn serialize_tuple_variant(
        self,
        _: &'static str,
        _: u32,
        variant: &'static str,
        len: usize,
    ) -> Result<Self> {
        self.variant(variant)?;
        self.array(len)?;
        Ok(self)
    }

    fn serialize_map(self, len: Option<usize>) -> Result<Self> {
        self.map(len.ok_or(Unsupported)?)?;
        Ok(self)
    }

    fn serialize_struct(self, _: &'static str, len: usize) -> Result<Self> {
        self.map(len)?;
        Ok(self)
    }

    fn serialize_struct_variant(
        self,
        _: &'static str,
        _: u32,
        variant: &'static str,
        len: usize,
    ) -> Result<Self> {
        self.variant(variant)?;
        self.map(len)?;
        Ok(self)
    }
}

/// Sequences, tuples and tuple structs and variants: their elements one after the other.
macro_rules! elements {
    ($($trait:ident :: $method:ident),*) => {$(
        impl ser::$trait for &mut Encoder<'_> {
            type Ok = ();
            type Error = Unsupported;

            #[inline]
            fn $method<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<()> {
                value.serialize(&mut **self)
            }

            fn end(self) -> Result<()> {
                Ok(())
            }
        }
    )*};
}

elements!(
    SerializeSeq::serialize_element,
    SerializeTuple::serialize_element,
    SerializeTupleStruct::serialize_field,
    SerializeTupleVariant::serialize_field
);

/// Structs and struct variants: field name, then value.
macro_rules! fields {
    ($($trait:ident),*) => {$(
        impl ser::$trait for &mut Encoder<'_> {
            type Ok = ();
            type Error = Unsupported;

            #[inline]
            fn serialize_field<T: Serialize + ?Sized>(&mut self, key: &'static str, value: &T) -> Result<()> {
                self.str(key)?;
                value.serialize(&mut **self)
            }

            fn end(self) -> Result<()> {
                Ok(())
            }
        }
    )*};
}

fields!(SerializeStruct, SerializeStructVariant);

impl ser::SerializeMap for &mut Encoder<'_> {
    type Ok = ();
    type Error = Unsupported;

    fn serialize_key<T: Serialize + ?Sized>(&mut self, key: &T) -> Result<()> {
        key.serialize(&mut **self)
    }

    fn serialize_value<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<()> {
        value.serialize(&mut **self)
    }

    fn end(self) -> Result<()> {
        Ok(())
    }
}

/// A number or a boolean: what [`Encoder`] writes for one, and what an element of a sequence
/// gives [`ScalarOf`].
#[derive(Clone, Copy)]
enum Scalar {
    Uint(u64),
    Int(i64),
    F32(f32),
    F64(f64),
    Bool(bool),
}

impl Scalar {
    /// The most bytes one takes.
    const MAX: usize = 9;

    /// Writes this in its smallest form, as rmp-serde does (rmp's `write_uint`, `write_sint`
    /// with non-negative values as unsigned ones), into the first of `out`'s [`Scalar::MAX`]
    /// bytes; returns how many it took.
    #[inline(always)]
    fn write(self, out: &mut [u8]) -> usize {
        #[inline(always)]
        fn form<const N: usize>(out: &mut [u8], marker: u8, be: [u8; N]) -> usize {
            out[0] = marker;
            out[1..=N].copy_from_slice(&be);
            N + 1
        }
        #[inline(always)]
        fn uint(out: &mut [u8], v: u64) -> usize {
            match v {
                0..=127 => {
                    out[0] = v as u8;
                    1
                }
                128..=255 => form(out, 0xcc, [v as u8]),
                256..=65_535 => form(out, 0xcd, (v as u16).to_be_bytes()),
                65_536..=4_294_967_295 => form(out, 0xce, (v as u32).to_be_bytes()),
                _ => form(out, 0xcf, v.to_be_bytes()),
            }
        }
        match self {
            Scalar::Int(v) if v < 0 => match v {
                -32..=-1 => {
                    out[0] = v as u8;
                    1
                }
                -128..=-33 => form(out, 0xd0, [v as u8]),
                -32_768..=-129 => form(out, 0xd1, (v as i16).to_be_bytes()),
                -2_147_483_648..=-32_769 => form(out, 0xd2, (v as i32).to_be_bytes()),
                _ => form(out, 0xd3, v.to_be_bytes()),
            },
            Scalar::Int(v) => uint(out, v as u64),
            Scalar::Uint(v) => uint(out, v),
            Scalar::F32(v) => form(out, 0xca, v.to_be_bytes()),
            Scalar::F64(v) => form(out, 0xcb, v.to_be_bytes()),
            Scalar::Bool(v) => {
                out[0] = if v { 0xc3 } else { 0xc2 };
                1
            }
        }
    }
}

/// The serializer that asks a value for the [`Scalar`] it is: anything else is
/// [`Unsupported`], at its first serializer call (no side effects to undo).
struct ScalarOf;

macro_rules! scalar_of {
    ($($method:ident($t:ty) => $variant:ident),*) => {$(
        #[inline(always)]
        fn $method(self, v: $t) -> Result<Scalar> {
            Ok(Scalar::$variant(v.into()))
        }
    )*};
}

macro_rules! not_scalar {
    ($($method:ident($($arg:ty),*) -> $out:ty),*) => {$(
        fn $method(self, $(_: $arg),*) -> Result<$out> {
            Err(Unsupported)
        }
    )*};
}

impl ser::Serializer for ScalarOf {
    type Ok = Scalar;
    type Error = Unsupported;
    type SerializeSeq = ser::Impossible<Scalar, Unsupported>;
    type SerializeTuple = ser::Impossible<Scalar, Unsupported>;
    type SerializeTupleStruct = ser::Impossible<Scalar, Unsupported>;
    type SerializeTupleVariant = ser::Impossible<Scalar, Unsupported>;
    type SerializeMap = ser::Impossible<Scalar, Unsupported>;
    type SerializeStruct = ser::Impossible<Scalar, Unsupported>;
    type SerializeStructVariant = ser::Impossible<Scalar, Unsupported>;

    fn is_human_readable(&self) -> bool {
        false
    }

    with_scalar_methods!(scalar_of);

    not_scalar!(
        serialize_char(char) -> Scalar,
        serialize_str(&str) -> Scalar,
        serialize_bytes(&[u8]) -> Scalar,
        serialize_none() -> Scalar,
        serialize_unit() -> Scalar,
        serialize_unit_struct(&'static str) -> Scalar,
        serialize_unit_variant(&'static str, u32, &'static str) -> Scalar,
        serialize_seq(Option<usize>) -> Self::SerializeSeq,
        serialize_tuple(usize) -> Self::SerializeTuple,
        serialize_tuple_struct(&'static str, usize) -> Self::SerializeTupleStruct,
        serialize_tuple_variant(&'static str, u32, &'static str, usize) -> Self::SerializeTupleVariant,
        serialize_map(Option<usize>) -> Self::SerializeMap,
        serialize_struct(&'static str, usize) -> Self::SerializeStruct,
        serialize_struct_variant(&'static str, u32, &'static str, usize) -> Self::SerializeStructVariant
    );

    fn serialize_some<T: Serialize + ?Sized>(self, _: &T) -> Result<Scalar> {
        Err(Unsupported)
    }

    fn serialize_newtype_struct<T: Serialize + ?Sized>(self, _: &'static str, _: &T) -> Result<Scalar> {
        Err(Unsupported)
    }

    fn serialize_newtype_variant<T: Serialize + ?Sized>(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        _: &T,
    ) -> Result<Scalar> {
        Err(Unsupported)
    }
}

struct Decoder<'de> {
    /// What is not read yet.
    rest: &'de [u8],
    /// Containers that may still open, as rmp-serde counts them (it fails when this reaches 0).
    depth: u16,
    /// Elements (or keys) the visitor of the last array (or map) left unread.
    unread: u32,
}

impl<'de> Decoder<'de> {
    #[inline]
    fn peek(&self) -> Result<u8> {
        self.rest.first().copied().ok_or(Unsupported)
    }

    /// Consumes the byte [`peek`](Self::peek) returned.
    #[inline]
    fn skip_peeked(&mut self) {
        self.rest = &self.rest[1..];
    }

    #[inline]
    fn byte(&mut self) -> Result<u8> {
        let (&b, rest) = self.rest.split_first().ok_or(Unsupported)?;
        self.rest = rest;
        Ok(b)
    }

    #[inline]
    fn take(&mut self, n: usize) -> Result<&'de [u8]> {
        if n > self.rest.len() {
            return Err(Unsupported);
        }
        let (slice, rest) = self.rest.split_at(n);
        self.rest = rest;
        Ok(slice)
    }

    #[inline]
    fn array<const N: usize>(&mut self) -> Result<[u8; N]> {
        let (head, rest) = self.rest.split_first_chunk::<N>().ok_or(Unsupported)?;
        self.rest = rest;
        Ok(*head)
    }

    #[inline]
    fn u16(&mut self) -> Result<u16> {
        self.array().map(u16::from_be_bytes)
    }

    #[inline]
    fn u32(&mut self) -> Result<u32> {
        self.array().map(u32::from_be_bytes)
    }

    /// The next value, a number, nil or a boolean (as rmp-serde's `any_num` visits them). The
    /// unsigned forms, the common ones, are matched with their bytes, which costs one length
    /// check and one move of the cursor (a jump table through every marker cost more than the
    /// number it reads).
    #[inline(always)]
    fn next_number<V: Visitor<'de>>(&mut self, v: V) -> Result<V::Value> {
        match *self.rest {
            [m @ 0x00..=0x7f, ref rest @ ..] => {
                self.rest = rest;
                v.visit_u8(m)
            }
            [0xce, a, b, c, d, ref rest @ ..] => {
                self.rest = rest;
                v.visit_u32(u32::from_be_bytes([a, b, c, d]))
            }
            [0xcd, a, b, ref rest @ ..] => {
                self.rest = rest;
                v.visit_u16(u16::from_be_bytes([a, b]))
            }
            [0xcc, a, ref rest @ ..] => {
                self.rest = rest;
                v.visit_u8(a)
            }
            _ => {
                let marker = self.byte()?;
                self.number(marker, v)
            }
        }
    }

    /// Nil, booleans and numbers after `marker`, as rmp-serde's `any_num` visits them.
    #[inline]
    fn number<V: Visitor<'de>>(&mut self, marker: u8, v: V) -> Result<V::Value> {
        match marker {
            0x00..=0x7f => v.visit_u8(marker),
            0xe0..=0xff => v.visit_i8(marker as i8),
            0xc0 => v.visit_unit(),
            0xc2 => v.visit_bool(false),
            0xc3 => v.visit_bool(true),
            0xcc => v.visit_u8(self.byte()?),
            0xcd => v.visit_u16(self.u16()?),
            0xce => v.visit_u32(self.u32()?),
            0xcf => v.visit_u64(self.array().map(u64::from_be_bytes)?),
            0xd0 => v.visit_i8(self.byte()? as i8),
            0xd1 => v.visit_i16(self.array().map(i16::from_be_bytes)?),
            0xd2 => v.visit_i32(self.array().map(i32::from_be_bytes)?),
            0xd3 => v.visit_i64(self.array().map(i64::from_be_bytes)?),
            0xca => v.visit_f32(self.array().map(f32::from_be_bytes)?),
            0xcb => v.visit_f64(self.array().map(f64::from_be_bytes)?),
            _ => Err(Unsupported),
        }
    }

    /// Any value, as rmp-serde's `any_inner`; `allow_bytes: false` turns bin into a sequence.
    fn any<V: Visitor<'de>>(&mut self, v: V, allow_bytes: bool) -> Result<V::Value> {
        let marker = self.byte()?;
        match marker {
            0xa0..=0xbf => self.str(usize::from(marker & 0x1f), v),
            0xd9 => {
                let len = self.byte()?;
                self.str(len.into(), v)
            }
            0xda => {
                let len = self.u16()?;
                self.str(len.into(), v)
            }
            0xdb => {
                let len = self.u32()?;
                self.str(len as usize, v)
            }
            0x90..=0x9f => self.seq(u32::from(marker & 0x0f), v),
            0xdc => {
                let len = self.u16()?;
                self.seq(len.into(), v)
            }
            0xdd => {
                let len = self.u32()?;
                self.seq(len, v)
            }
            0x80..=0x8f => self.map(u32::from(marker & 0x0f), v),
            0xde => {
                let len = self.u16()?;
                self.map(len.into(), v)
            }
            0xdf => {
                let len = self.u32()?;
                self.map(len, v)
            }
            0xc4..=0xc6 => {
                let len = match marker {
                    0xc4 => usize::from(self.byte()?),
                    0xc5 => usize::from(self.u16()?),
                    _ => self.u32()? as usize,
                };
                let bytes = self.take(len)?;
                if allow_bytes {
                    v.visit_borrowed_bytes(bytes)
                } else {
                    v.visit_seq(de::value::SeqDeserializer::<_, Unsupported>::new(
                        bytes.iter().copied(),
                    ))
                }
            }
            // Ext values, the reserved marker: rmp-serde's.
            0xc1 | 0xc7..=0xc9 | 0xd4..=0xd8 => Err(Unsupported),
            _ => self.number(marker, v),
        }
    }

    #[inline]
    fn str<V: Visitor<'de>>(&mut self, len: usize, v: V) -> Result<V::Value> {
        let bytes = self.take(len)?;
        match std::str::from_utf8(bytes) {
            Ok(s) => v.visit_borrowed_str(s),
            // rmp-serde offers invalid UTF-8 as bytes.
            Err(_) => v.visit_borrowed_bytes(bytes),
        }
    }

    /// An array or map of `len` elements (or keys) visited through `visit`, one level deeper;
    /// the visitor must take them all, as rmp-serde requires.
    fn nested<T>(&mut self, len: u32, visit: impl FnOnce(Elements<'_, 'de>) -> Result<T>) -> Result<T> {
        self.depth -= 1;
        if self.depth == 0 {
            return Err(Unsupported);
        }
        let access = Elements {
            rest: self.rest,
            depth: self.depth,
            left: len,
            de: self,
        };
        let value = visit(access)?;
        if self.unread != 0 {
            return Err(Unsupported);
        }
        self.depth += 1;
        Ok(value)
    }

    fn seq<V: Visitor<'de>>(&mut self, len: u32, v: V) -> Result<V::Value> {
        self.nested(len, |access| v.visit_seq(access))
    }

    fn map<V: Visitor<'de>>(&mut self, len: u32, v: V) -> Result<V::Value> {
        self.nested(len, |access| v.visit_map(access))
    }
}

macro_rules! through_number {
    ($($method:ident),*) => {$(
        #[inline]
        fn $method<V: Visitor<'de>>(self, v: V) -> Result<V::Value> {
            self.next_number(v)
        }
    )*};
}

macro_rules! through_any {
    ($($method:ident),*) => {$(
        fn $method<V: Visitor<'de>>(self, v: V) -> Result<V::Value> {
            self.any(v, true)
        }
    )*};
}

impl<'de> de::Deserializer<'de> for &mut Decoder<'de> {
    type Error = Unsupported;

    fn is_human_readable(&self) -> bool {
        false
    }

    through_number!(
        deserialize_bool,
        deserialize_i8,
        deserialize_i16,
        deserialize_i32,
        deserialize_i64,
        deserialize_u8,
        deserialize_u16,
        deserialize_u32,
        deserialize_u64,
        deserialize_f32,
        deserialize_f64
    );

    through_any!(
        deserialize_any,
        deserialize_char,
        deserialize_str,
        deserialize_string,
        deserialize_bytes,
        deserialize_byte_buf,
        deserialize_unit,
        deserialize_map,
        deserialize_identifier,
        deserialize_ignored_any
    );

    fn deserialize_i128<V: Visitor<'de>>(self, _: V) -> Result<V::Value> {
        Err(Unsupported)
    }

    fn deserialize_u128<V: Visitor<'de>>(self, _: V) -> Result<V::Value> {
        Err(Unsupported)
    }

    fn deserialize_option<V: Visitor<'de>>(self, v: V) -> Result<V::Value> {
        if self.peek()? == 0xc0 {
            self.skip_peeked();
            v.visit_none()
        } else {
            v.visit_some(self)
        }
    }

    fn deserialize_unit_struct<V: Visitor<'de>>(self, _: &'static str, v: V) -> Result<V::Value> {
        // rmp-serde writes unit structs as [] and reads [] or nil as one.
        match self.peek()? {
            0xc0 | 0x90 => {
                self.skip_peeked();
                v.visit_unit()
            }
            _ => self.any(v, true),
        }
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(self, name: &'static str, v: V) -> Result<V::Value> {
        if name == EXT_STRUCT {
            return Err(Unsupported);
        }
        v.visit_newtype_struct(self)
    }

    fn deserialize_seq<V: Visitor<'de>>(self, v: V) -> Result<V::Value> {
        self.any(v, false)
    }

    fn deserialize_tuple<V: Visitor<'de>>(self, _: usize, v: V) -> Result<V::Value> {
        self.any(v, false)
    }

    fn deserialize_tuple_struct<V: Visitor<'de>>(self, _: &'static str, _: usize, v: V) -> Result<V::Value> {
        self.any(v, false)
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _: &'static str,
        _: &'static [&'static str],
        v: V,
    ) -> Result<V::Value> {
        self.any(v, false)
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        _: &'static str,
        _: &'static [&'static str],
        v: V,
    ) -> Result<V::Value> {
        // A variant with data is a map of one entry; anything else is the variant alone.
        let len = match self.peek()? {
            m @ 0x80..=0x8f => {
                self.skip_peeked();
                u32::from(m & 0x0f)
            }
            0xde => {
                self.skip_peeked();
                self.u16()?.into()
            }
            0xdf => {
                self.skip_peeked();
                self.u32()?
            }
            _ => return v.visit_enum(UnitVariant { de: self }),
        };
        if len != 1 {
            return Err(Unsupported);
        }
        v.visit_enum(Variant { de: self })
    }
}

/// The elements of an array, or the keys and values of a map (`left` counts elements or keys).
///
/// The visitor owns this access, and it reads from a copy of the decoder's position, written
/// back when the visitor is done (in `drop`). A copy the visitor owns lets the compiler keep the
/// position in a register across a loop of elements; through a reference to the decoder, it was
/// stored and read back for every element (the compiler could not tell it from the elements
/// the visitor stores), a store-to-load wait each time.
struct Elements<'a, 'de> {
    de: &'a mut Decoder<'de>,
    rest: &'de [u8],
    depth: u16,
    left: u32,
}

impl Drop for Elements<'_, '_> {
    fn drop(&mut self) {
        self.de.rest = self.rest;
        self.de.unread = self.left;
    }
}

impl<'de> Elements<'_, 'de> {
    /// The next value, read from here.
    #[inline]
    fn next<T: DeserializeSeed<'de>>(&mut self, seed: T) -> Result<T::Value> {
        let mut de = Decoder {
            rest: self.rest,
            depth: self.depth,
            unread: 0,
        };
        let value = seed.deserialize(&mut de)?;
        self.rest = de.rest;
        Ok(value)
    }
}

impl<'de> de::SeqAccess<'de> for Elements<'_, 'de> {
    type Error = Unsupported;

    #[inline]
    fn next_element_seed<T: DeserializeSeed<'de>>(&mut self, seed: T) -> Result<Option<T::Value>> {
        if self.left == 0 {
            return Ok(None);
        }
        self.left -= 1;
        self.next(seed).map(Some)
    }

    fn size_hint(&self) -> Option<usize> {
        Some(self.left as usize)
    }
}

impl<'de> de::MapAccess<'de> for Elements<'_, 'de> {
    type Error = Unsupported;

    #[inline]
    fn next_key_seed<K: DeserializeSeed<'de>>(&mut self, seed: K) -> Result<Option<K::Value>> {
        if self.left == 0 {
            return Ok(None);
        }
        self.left -= 1;
        self.next(seed).map(Some)
    }

    #[inline]
    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value> {
        self.next(seed)
    }

    fn size_hint(&self) -> Option<usize> {
        Some(self.left as usize)
    }
}

/// An enum written as `{variant: data}`.
struct Variant<'a, 'de> {
    de: &'a mut Decoder<'de>,
}

impl<'a, 'de> de::EnumAccess<'de> for Variant<'a, 'de> {
    type Error = Unsupported;
    type Variant = Self;

    fn variant_seed<S: DeserializeSeed<'de>>(self, seed: S) -> Result<(S::Value, Self)> {
        Ok((seed.deserialize(&mut *self.de)?, self))
    }
}

impl<'de> de::VariantAccess<'de> for Variant<'_, 'de> {
    type Error = Unsupported;

    fn unit_variant(self) -> Result<()> {
        match self.de.byte()? {
            0xc0 => Ok(()),
            _ => Err(Unsupported),
        }
    }

    fn newtype_variant_seed<T: DeserializeSeed<'de>>(self, seed: T) -> Result<T::Value> {
        seed.deserialize(self.de)
    }

    fn tuple_variant<V: Visitor<'de>>(self, _: usize, v: V) -> Result<V::Value> {
        self.de.any(v, false)
    }

    fn struct_variant<V: Visitor<'de>>(self, _: &'static [&'static str], v: V) -> Result<V::Value> {
        self.de.any(v, false)
    }
}

/// An enum written as its variant alone (a unit variant's name).
struct UnitVariant<'a, 'de> {
    de: &'a mut Decoder<'de>,
}

impl<'a, 'de> de::EnumAccess<'de> for UnitVariant<'a, 'de> {
    type Error = Unsupported;
    type Variant = Self;

    fn variant_seed<S: DeserializeSeed<'de>>(self, seed: S) -> Result<(S::Value, Self)> {
        Ok((seed.deserialize(&mut *self.de)?, self))
    }
}

impl<'de> de::VariantAccess<'de> for UnitVariant<'_, 'de> {
    type Error = Unsupported;

    fn unit_variant(self) -> Result<()> {
        Ok(())
    }

    fn newtype_variant_seed<T: DeserializeSeed<'de>>(self, _: T) -> Result<T::Value> {
        Err(Unsupported)
    }

    fn tuple_variant<V: Visitor<'de>>(self, _: usize, _: V) -> Result<V::Value> {
        Err(Unsupported)
    }

    fn struct_variant<V: Visitor<'de>>(self, _: &'static [&'static str], _: V) -> Result<V::Value> {
        Err(Unsupported)
    }
}

#[cfg(test)]
mod tests {
    //! Both directions against rmp-serde: the same bytes out, the same values in, and where the
    //! fast decoder takes bytes at all, rmp-serde takes them the same way.
    use std::collections::BTreeMap;

    use proptest::prelude::*;
    use serde::{Deserialize, Serialize};

    use super::{decode, encode};

    const DEPTH: usize = 128;

    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    struct UnitStruct;

    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    struct Newtype(u64);

    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    struct TupleStruct(i8, String);

    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    enum Kind {
        Unit,
        Newtype(i32),
        Tuple(u8, String),
        Struct { a: Option<u16>, b: Vec<i64> },
    }

    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    struct Rich {
        small: (u8, u16, u32, u64),
        signed: (i8, i16, i32, i64),
        floats: (f32, f64),
        flag: bool,
        letter: char,
        text: String,
        #[serde(with = "serde_bytes")]
        blob: Vec<u8>,
        maybe: Option<Option<u32>>,
        kinds: Vec<Kind>,
        table: BTreeMap<String, i64>,
        nested: Vec<Vec<u32>>,
        unit: (),
        unit_struct: UnitStruct,
        newtype: Newtype,
        tuple_struct: TupleStruct,
        #[serde(skip_serializing_if = "Option::is_none", default)]
        skipped: Option<String>,
    }

    fn kind() -> impl Strategy<Value = Kind> {
        prop_oneof![
            Just(Kind::Unit),
            any::<i32>().prop_map(Kind::Newtype),
            (any::<u8>(), ".{0,40}").prop_map(|(a, b)| Kind::Tuple(a, b)),
            (any::<Option<u16>>(), prop::collection::vec(any::<i64>(), 0..20))
                .prop_map(|(a, b)| Kind::Struct { a, b }),
        ]
    }

    prop_compose! {
        fn rich()(
            small in any::<(u8, u16, u32, u64)>(),
            signed in any::<(i8, i16, i32, i64)>(),
            floats in any::<(f32, f64)>(),
            flag in any::<bool>(),
            letter in any::<char>(),
            text in ".{0,300}",
            blob in prop::collection::vec(any::<u8>(), 0..300),
            maybe in any::<Option<Option<u32>>>(),
            kinds in prop::collection::vec(kind(), 0..20),
            table in prop::collection::btree_map(".{0,8}", any::<i64>(), 0..20),
            nested in prop::collection::vec(prop::collection::vec(any::<u32>(), 0..20), 0..20),
            newtype in any::<u64>(),
            tuple_struct in any::<(i8, String)>(),
            skipped in any::<Option<String>>(),
        ) -> Rich {
            Rich {
                small, signed, floats, flag, letter, text, blob, maybe, kinds, table, nested,
                unit: (), unit_struct: UnitStruct, newtype: Newtype(newtype),
                tuple_struct: TupleStruct(tuple_struct.0, tuple_struct.1), skipped,
            }
        }
    }

    fn rmp_bytes<T: Serialize + ?Sized>(value: &T) -> Vec<u8> {
        let mut out = Vec::new();
        value
            .serialize(&mut rmp_serde::Serializer::new(&mut out).with_struct_map())
            .unwrap();
        out
    }

    fn rmp_decode<'de, T: Deserialize<'de>>(bytes: &'de [u8]) -> Option<T> {
        let mut de = rmp_serde::Deserializer::from_read_ref(bytes);
        de.set_max_depth(DEPTH);
        let value = T::deserialize(&mut de).ok()?;
        // Trailing bytes are an error for the codec (`decode_owned` checks the same way).
        serde::de::IgnoredAny::deserialize(&mut de)
            .is_err()
            .then_some(value)
    }

    fn fast_bytes<T: Serialize + ?Sized>(value: &T) -> Vec<u8> {
        let mut out = Vec::new();
        encode(value, &mut out).expect("on the fast path");
        out
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(300))]

        #[test]
        fn encodes_the_bytes_rmp_serde_encodes(value in rich()) {
            prop_assert_eq!(fast_bytes(&value), rmp_bytes(&value));
        }

        #[test]
        fn decodes_what_rmp_serde_decodes(value in rich()) {
            let bytes = rmp_bytes(&value);
            let fast: Rich = decode(&bytes, DEPTH).expect("on the fast path");
            let slow: Rich = rmp_decode(&bytes).unwrap();
            // Debug, not ==: NaN floats.
            prop_assert_eq!(format!("{fast:?}"), format!("{slow:?}"));
            let fast: rmpv::Value = decode(&bytes, DEPTH).expect("on the fast path");
            prop_assert_eq!(Some(fast), rmp_decode::<rmpv::Value>(&bytes));
        }

        /// Damaged encodings (a byte changed, the end cut off): whatever the fast decoder accepts,
        /// rmp-serde accepts and reads the same; what it refuses goes to rmp-serde anyway.
        #[test]
        fn never_accepts_what_rmp_serde_reads_otherwise(
            value in rich(),
            at in any::<prop::sample::Index>(),
            byte in any::<u8>(),
            cut in any::<prop::sample::Index>(),
        ) {
            let mut bytes = rmp_bytes(&value);
            let i = at.index(bytes.len());
            bytes[i] = byte;
            for bytes in [&bytes[..], &bytes[..cut.index(bytes.len())]] {
                if let Some(fast) = decode::<Rich>(bytes, DEPTH) {
                    let slow = rmp_decode::<Rich>(bytes);
                    prop_assert_eq!(Some(format!("{fast:?}")), slow.map(|s| format!("{s:?}")));
                }
                if let Some(fast) = decode::<rmpv::Value>(bytes, DEPTH) {
                    prop_assert_eq!(Some(fast), rmp_decode::<rmpv::Value>(bytes));
                }
            }
        }

        #[test]
        fn random_bytes_decode_as_rmp_serde_decodes_them_or_not_at_all(
            bytes in prop::collection::vec(any::<u8>(), 0..64),
        ) {
            if let Some(fast) = decode::<rmpv::Value>(&bytes, DEPTH) {
                prop_assert_eq!(Some(fast), rmp_decode::<rmpv::Value>(&bytes));
            }
            if let Some(fast) = decode::<Vec<Kind>>(&bytes, DEPTH) {
                prop_assert_eq!(Some(fast), rmp_decode::<Vec<Kind>>(&bytes));
            }
        }
    }

    #[test]
    fn leaves_to_rmp_serde_what_it_does_not_handle() {
        // 128-bit integers, msgpack ext values, sequences of unknown length.
        let mut out = Vec::new();
        assert!(encode(&1u128, &mut out).is_err());
        let ext = rmpv::Value::Ext(3, vec![1, 2]);
        assert!(encode(&ext, &mut out).is_err());
        assert!(decode::<rmpv::Value>(&rmp_bytes(&ext), DEPTH).is_none());
        assert!(decode::<u128>(&rmp_bytes(&7u128), DEPTH).is_none());
        struct Unsized;
        impl Serialize for Unsized {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.collect_seq((0..3).filter(|_| true))
            }
        }
        assert!(encode(&Unsized, &mut out).is_err());
    }

    #[test]
    fn nesting_stops_where_rmp_serde_stops() {
        for depth in [126, 127, 128, 129] {
            let bytes: Vec<u8> = std::iter::repeat_n(0x91, depth).chain([0x01]).collect();
            let fast = decode::<rmpv::Value>(&bytes, DEPTH).is_some();
            let slow = rmp_decode::<rmpv::Value>(&bytes).is_some();
            assert_eq!(fast, slow, "{depth} nested arrays");
        }
        assert!(decode::<rmpv::Value>(&[0x91; 200], DEPTH).is_none());
    }

    /// Sequences of numbers and booleans (written through `collect_seq`'s block): every form at
    /// its edges, across the block's refills, and sequences whose elements change kind, encode
    /// to rmp-serde's bytes.
    #[test]
    fn sequences_of_numbers_encode_as_rmp_serde_encodes_them() {
        fn same<T: Serialize + ?Sized + std::fmt::Debug>(value: &T) {
            assert_eq!(fast_bytes(value), rmp_bytes(value), "{value:?}");
        }
        let unsigned: Vec<u64> = [
            0,
            1,
            127,
            128,
            255,
            256,
            65_535,
            65_536,
            4_294_967_295,
            4_294_967_296,
        ]
        .into_iter()
        .chain([u64::MAX - 1, u64::MAX])
        .collect();
        let signed: Vec<i64> = [-1, -32, -33, -128, -129, -32_768, -32_769, -2_147_483_648]
            .into_iter()
            .chain([-2_147_483_649, i64::MIN, 0, 5, 200, 70_000, i64::MAX])
            .collect();
        same(&unsigned);
        same(&signed);
        same(&unsigned.iter().map(|&v| v as u8).collect::<Vec<u8>>());
        same(&unsigned.iter().map(|&v| v as u16).collect::<Vec<u16>>());
        same(&unsigned.iter().map(|&v| v as u32).collect::<Vec<u32>>());
        same(&signed.iter().map(|&v| v as i8).collect::<Vec<i8>>());
        same(&signed.iter().map(|&v| v as i16).collect::<Vec<i16>>());
        same(&signed.iter().map(|&v| v as i32).collect::<Vec<i32>>());
        same(&[0.5f32, -1e30, f32::NAN, f32::INFINITY][..]);
        same(&[0.25f64, -1e300, f64::NAN, f64::NEG_INFINITY][..]);
        same(&[true, false, true][..]);
        // Nine-byte forms, many more than one block holds.
        same(&vec![u64::MAX; 1_000]);
        same(
            &(0..3_000)
                .map(|i| i * 1_234_567_i64 - 1_000_000_000)
                .collect::<Vec<_>>(),
        );
        // Elements that are not numbers, from the start, after numbers, or some of them.
        // (A `Vec` of them: `rmpv::Value::Array` writes its elements one by one itself.)
        let mixed: Vec<rmpv::Value> = vec![1.into(), 2.5.into(), "three".into(), 4.into(), true.into()];
        same(&mixed);
        same(&vec![rmpv::Value::from("one"), 2.into(), 3.into()]);
        same(
            &(0..200)
                .map(|i| if i == 150 { rmpv::Value::Nil } else { i.into() })
                .collect::<Vec<rmpv::Value>>(),
        );
        same(&[Some(1u32), None, Some(70_000)][..]);
        same(&vec![vec![1u32, 300], vec![], vec![70_000]]);
        same(&Vec::<u32>::new());
        same(&std::collections::BTreeSet::from([3u16, 300, 30_000]));
    }

    /// Every number form, whole and cut short, read as every number type: the fast decoder
    /// reads what rmp-serde reads, and leaves it the rest.
    #[test]
    fn numbers_of_every_form_read_as_rmp_serde_reads_them() {
        let values: Vec<Vec<u8>> = [
            rmp_bytes(&5u8),
            rmp_bytes(&200u8),
            rmp_bytes(&60_000u16),
            rmp_bytes(&4_000_000_000u32),
            rmp_bytes(&u64::MAX),
            rmp_bytes(&-3i8),
            rmp_bytes(&-100i8),
            rmp_bytes(&-30_000i16),
            rmp_bytes(&-2_000_000_000i32),
            rmp_bytes(&i64::MIN),
            rmp_bytes(&1.5f32),
            rmp_bytes(&-2.25f64),
            rmp_bytes(&true),
            rmp_bytes(&()),
        ]
        .into();
        fn same<T: for<'de> Deserialize<'de> + PartialEq + std::fmt::Debug>(bytes: &[u8]) {
            if let Some(fast) = decode::<T>(bytes, DEPTH) {
                assert_eq!(Some(fast), rmp_decode::<T>(bytes), "{bytes:02x?}");
            }
            // In a sequence, the form read through the element path.
            let mut seq = vec![0x92, 0x01];
            seq.extend_from_slice(bytes);
            if let Some(fast) = decode::<Vec<T>>(&seq, DEPTH) {
                assert_eq!(Some(fast), rmp_decode::<Vec<T>>(&seq), "{seq:02x?}");
            }
        }
        for whole in &values {
            for end in 0..=whole.len() {
                let bytes = &whole[..end];
                same::<u8>(bytes);
                same::<u16>(bytes);
                same::<u32>(bytes);
                same::<u64>(bytes);
                same::<i8>(bytes);
                same::<i16>(bytes);
                same::<i32>(bytes);
                same::<i64>(bytes);
                same::<f32>(bytes);
                same::<f64>(bytes);
                same::<bool>(bytes);
            }
            // Whole, each type the value fits decodes on the fast path.
            assert!(
                decode::<rmpv::Value>(whole, DEPTH).is_some(),
                "{whole:02x?} on the fast path"
            );
        }
        assert_eq!(decode::<u32>(&values[3], DEPTH), Some(4_000_000_000));
        assert_eq!(
            decode::<u16>(&values[3], DEPTH),
            None,
            "does not fit: rmp-serde says why"
        );
        assert_eq!(
            decode::<Vec<u16>>(&[0x92, 0xcc, 0xff, 0xcd, 0x01, 0x00], DEPTH),
            Some(vec![255, 256])
        );
    }

    #[test]
    fn trailing_bytes_are_left_to_rmp_serde() {
        assert_eq!(decode::<u8>(&[0x01], DEPTH), Some(1));
        assert_eq!(decode::<u8>(&[0x01, 0x02], DEPTH), None);
    }
}
