//! Is a value null? Answered by a serializer that stops at the first call, so the test costs
//! nothing for the common non-null value.

use std::fmt;

use serde::ser::{self, Impossible, Serialize};

/// True when `value` serializes as null: `()`, `None`, a unit struct, or a newtype around one.
/// This is the "no reply" test of 0.1.2 (`if response is not None`).
pub(crate) fn is_nil<T: Serialize + ?Sized>(value: &T) -> bool {
    value.serialize(Probe).unwrap_or(false)
}

struct Probe;

#[derive(Debug)]
struct NotNil;

impl fmt::Display for NotNil {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("not nil")
    }
}

impl std::error::Error for NotNil {}

impl ser::Error for NotNil {
    fn custom<T: fmt::Display>(_: T) -> Self {
        NotNil
    }
}

macro_rules! not_nil {
    ($($f:ident($($t:ty),*)),* $(,)?) => {$(
        fn $f(self, $(_: $t),*) -> Result<bool, NotNil> {
            Ok(false)
        }
    )*};
}

impl ser::Serializer for Probe {
    type Ok = bool;
    type Error = NotNil;
    type SerializeSeq = Impossible<bool, NotNil>;
    type SerializeTuple = Impossible<bool, NotNil>;
    type SerializeTupleStruct = Impossible<bool, NotNil>;
    type SerializeTupleVariant = Impossible<bool, NotNil>;
    type SerializeMap = Impossible<bool, NotNil>;
    type SerializeStruct = Impossible<bool, NotNil>;
    type SerializeStructVariant = Impossible<bool, NotNil>;

    not_nil!(
        serialize_bool(bool),
        serialize_i8(i8),
        serialize_i16(i16),
        serialize_i32(i32),
        serialize_i64(i64),
        serialize_i128(i128),
        serialize_u8(u8),
        serialize_u16(u16),
        serialize_u32(u32),
        serialize_u64(u64),
        serialize_u128(u128),
        serialize_f32(f32),
        serialize_f64(f64),
        serialize_char(char),
        serialize_str(&str),
        serialize_bytes(&[u8]),
        serialize_unit_variant(&'static str, u32, &'static str),
    );

    fn serialize_none(self) -> Result<bool, NotNil> {
        Ok(true)
    }

    fn serialize_unit(self) -> Result<bool, NotNil> {
        Ok(true)
    }

    fn serialize_unit_struct(self, _: &'static str) -> Result<bool, NotNil> {
        Ok(true)
    }

    fn serialize_some<T: Serialize + ?Sized>(self, value: &T) -> Result<bool, NotNil> {
        value.serialize(self)
    }

    fn serialize_newtype_struct<T: Serialize + ?Sized>(
        self,
        _: &'static str,
        value: &T,
    ) -> Result<bool, NotNil> {
        value.serialize(self)
    }

    fn serialize_newtype_variant<T: Serialize + ?Sized>(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        _: &T,
    ) -> Result<bool, NotNil> {
        Ok(false)
    }

    fn serialize_seq(self, _: Option<usize>) -> Result<Self::SerializeSeq, NotNil> {
        Err(NotNil)
    }
    fn serialize_tuple(self, _: usize) -> Result<Self::SerializeTuple, NotNil> {
        Err(NotNil)
    }
    fn serialize_tuple_struct(self, _: &'static str, _: usize) -> Result<Self::SerializeTupleStruct, NotNil> {
        Err(NotNil)
    }
    fn serialize_tuple_variant(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        _: usize,
    ) -> Result<Self::SerializeTupleVariant, NotNil> {
        Err(NotNil)
    }
    fn serialize_map(self, _: Option<usize>) -> Result<Self::SerializeMap, NotNil> {
        Err(NotNil)
    }
    fn serialize_struct(self, _: &'static str, _: usize) -> Result<Self::SerializeStruct, NotNil> {
        Err(NotNil)
    }
    fn serialize_struct_variant(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        _: usize,
    ) -> Result<Self::SerializeStructVariant, NotNil> {
        Err(NotNil)
    }
}

#[cfg(test)]
mod tests {
    use super::is_nil;

    #[derive(serde::Serialize)]
    struct Unit;
    #[derive(serde::Serialize)]
    struct Wrap(Option<u8>);

    #[test]
    fn only_null_values_are_nil() {
        assert!(is_nil(&()));
        assert!(is_nil(&None::<u8>));
        assert!(is_nil(&Some(None::<u8>)));
        assert!(is_nil(&Unit));
        assert!(is_nil(&Wrap(None)));
        // 0.1.2 replies to every falsy value but None.
        assert!(!is_nil(&0));
        assert!(!is_nil(&false));
        assert!(!is_nil(""));
        assert!(!is_nil(&Vec::<u8>::new()));
        assert!(!is_nil(&std::collections::HashMap::<String, u8>::new()));
        assert!(!is_nil(&Wrap(Some(0))));
        assert!(!is_nil(&rmpv::Value::Array(vec![])));
        assert!(is_nil(&rmpv::Value::Nil));
        assert!(is_nil(&serde_json::Value::Null));
    }
}
