//! Nested enums on the wire as one flat enum.
//!
//! [`super::Request`], [`super::Response`], [`super::NodeRequest`] and
//! [`super::WireError`] are enums of per-role (or per-job) enums
//! (`Request::Ods(OdsRequest::Fetch { .. })`), so each role's logic matches
//! exactly its own variants. On the wire they stay what the protocol has
//! always sent: one variant index, then the fields. Each nested enum keeps a
//! table of the flat index of each of its variants ([`Tags`]); the outer
//! enum's serde impls, which [`flat_enum`] writes with the enum itself from
//! the one list of its groups, write the flat index in place of the inner
//! one, and read it back into the right nested enum.
//!
//! A new variant gets the next unused flat index in its role's table; the
//! round-trip tests of the protocol fail if one is missing.

use std::fmt;
use std::marker::PhantomData;

use serde::de::value::U32Deserializer;
use serde::de::{self, DeserializeSeed, EnumAccess, VariantAccess, Visitor};
use serde::ser::{self, Impossible, Serialize, Serializer};

/// A flat wire enum whose variants each hold one group, written once: the
/// enum itself (its attributes and each variant's pass through), its serde
/// impls and `GROUPS`, the outer enum's table of flat indices, for its
/// tests. A variant holds a nested enum (`Variant(Inner)`, its flat indices
/// in `Inner::TAGS`) or a single value at one flat index
/// (`Variant(Inner) = INDEX`). With `+ From` after the wire name, each
/// group also converts into the outer enum.
macro_rules! flat_enum {
    (@from $outer:ident {
        $($(#[$vmeta:meta])* $variant:ident($(#[$fmeta:meta])* $ty:ty) $(= $tag:literal)?),* $(,)?
    }) => {$(
        impl From<$ty> for $outer {
            fn from(v: $ty) -> Self {
                $outer::$variant(v)
            }
        }
    )*};
    (@define $(#[$meta:meta])* $vis:vis enum $outer:ident as $name:literal {
        $($(#[$vmeta:meta])* $variant:ident($(#[$fmeta:meta])* $ty:ty) $(= $tag:literal)?),* $(,)?
    }) => {
        $(#[$meta])*
        $vis enum $outer {
            $($(#[$vmeta])* $variant($(#[$fmeta])* $ty),)*
        }

        impl $outer {
            /// The flat indices of each group, in declaration order.
            pub(crate) const GROUPS: &'static [$crate::protocol::flat::Tags] =
                &[$($crate::protocol::flat::flat_enum!(@tags $ty $(, $tag)?)),*];
        }

        impl serde::Serialize for $outer {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                match self {
                    $($outer::$variant(v) => {
                        $crate::protocol::flat::flat_enum!(@ser s, $name, $variant, v, $ty $(, $tag)?)
                    })*
                }
            }
        }

        impl<'de> serde::Deserialize<'de> for $outer {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                /// Builds the outer value from its group.
                struct Build;

                impl<'de> $crate::protocol::flat::Nested<'de, $outer> for Build {
                    fn build<V: serde::de::VariantAccess<'de>>(
                        self,
                        group: usize,
                        inner: $crate::protocol::flat::Inner<V>,
                    ) -> Result<$outer, V::Error> {
                        let mut g = 0usize;
                        $(
                            if group == g {
                                return Ok($outer::$variant(
                                    $crate::protocol::flat::flat_enum!(@de inner, $ty $(, $tag)?)
                                ));
                            }
                            g += 1;
                        )*
                        let _ = (g, inner);
                        Err(serde::de::Error::custom("no such group"))
                    }
                }

                $crate::protocol::flat::deserialize(d, $name, $outer::GROUPS, Build)
            }
        }
    };
    (@tags $ty:ty) => { <$ty>::TAGS };
    (@tags $ty:ty, $tag:literal) => { &[$tag] };
    (@ser $s:ident, $name:literal, $variant:ident, $v:ident, $ty:ty) => {
        $crate::protocol::flat::serialize($v, $name, <$ty>::TAGS, $s)
    };
    (@ser $s:ident, $name:literal, $variant:ident, $v:ident, $ty:ty, $tag:literal) => {
        $s.serialize_newtype_variant($name, $tag, stringify!($variant), $v)
    };
    (@de $inner:ident, $ty:ty) => { <$ty as serde::Deserialize>::deserialize($inner)? };
    (@de $inner:ident, $ty:ty, $tag:literal) => { $inner.into_variant().newtype_variant()? };
    ($(#[$meta:meta])* $vis:vis enum $outer:ident as $name:literal + From { $($body:tt)* }) => {
        $crate::protocol::flat::flat_enum!(@define $(#[$meta])* $vis enum $outer as $name { $($body)* });
        $crate::protocol::flat::flat_enum!(@from $outer { $($body)* });
    };
    ($(#[$meta:meta])* $vis:vis enum $outer:ident as $name:literal { $($body:tt)* }) => {
        $crate::protocol::flat::flat_enum!(@define $(#[$meta])* $vis enum $outer as $name { $($body)* });
    };
}
pub(crate) use flat_enum;

/// Flat wire index of each variant of one nested enum, in declaration order.
pub(crate) type Tags = &'static [u32];

/// Where flat index `tag` lives: the position of its table in `groups` and
/// the variant's index inside that nested enum.
pub(crate) fn locate(groups: &[Tags], tag: u32) -> Option<(usize, u32)> {
    groups
        .iter()
        .enumerate()
        .find_map(|(g, tags)| tags.iter().position(|&t| t == tag).map(|inner| (g, inner as u32)))
}

/// Serializes `value`, a nested enum whose variants sit at `tags` of the flat
/// enum `outer`, as that flat enum's variant.
pub(crate) fn serialize<T, S>(
    value: &T,
    outer: &'static str,
    tags: Tags,
    s: S,
) -> Result<S::Ok, S::Error>
where
    T: Serialize + ?Sized,
    S: Serializer,
{
    value.serialize(Reindex { s, outer, tags })
}

/// Deserializes the flat enum `outer`: reads the flat index, then lets
/// `nested` build the value from the group found in `groups` and a
/// deserializer that yields the inner index and the variant's fields.
pub(crate) fn deserialize<'de, D, T, F>(
    d: D,
    outer: &'static str,
    groups: &'static [Tags],
    nested: F,
) -> Result<T, D::Error>
where
    D: de::Deserializer<'de>,
    F: Nested<'de, T>,
{
    d.deserialize_enum(outer, &[], FlatVisitor { groups, nested, _t: PhantomData })
}

/// Builds an outer value from group `group` of the flat table.
pub(crate) trait Nested<'de, T> {
    /// `inner` deserializes as the nested enum of `group`.
    fn build<V: VariantAccess<'de>>(self, group: usize, inner: Inner<V>) -> Result<T, V::Error>;
}

struct FlatVisitor<F, T> {
    groups: &'static [Tags],
    nested: F,
    _t: PhantomData<T>,
}

impl<'de, F: Nested<'de, T>, T> Visitor<'de> for FlatVisitor<F, T> {
    type Value = T;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a variant of a flat protocol enum")
    }

    fn visit_enum<A: EnumAccess<'de>>(self, data: A) -> Result<T, A::Error> {
        let (tag, variant): (u32, A::Variant) = data.variant()?;
        let (group, index) = locate(self.groups, tag).ok_or_else(|| {
            de::Error::invalid_value(de::Unexpected::Unsigned(tag.into()), &"a known variant index")
        })?;
        self.nested.build(group, Inner { index, variant })
    }
}

/// A deserializer for one nested enum whose variant index was read already.
pub(crate) struct Inner<V> {
    index: u32,
    variant: V,
}

impl<V> Inner<V> {
    /// The variant's fields, for a group that is a plain struct rather than
    /// a nested enum.
    pub(crate) fn into_variant(self) -> V {
        self.variant
    }
}

impl<'de, A: VariantAccess<'de>> de::Deserializer<'de> for Inner<A> {
    type Error = A::Error;

    fn deserialize_any<W: Visitor<'de>>(self, visitor: W) -> Result<W::Value, A::Error> {
        visitor.visit_enum(self)
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string
        bytes byte_buf option unit unit_struct newtype_struct seq tuple
        tuple_struct map struct enum identifier ignored_any
    }
}

impl<'de, V: VariantAccess<'de>> EnumAccess<'de> for Inner<V> {
    type Error = V::Error;
    type Variant = V;

    fn variant_seed<S: DeserializeSeed<'de>>(self, seed: S) -> Result<(S::Value, V), V::Error> {
        let index = seed.deserialize(U32Deserializer::<V::Error>::new(self.index))?;
        Ok((index, self.variant))
    }
}

/// A serializer that passes one enum variant through with its flat index.
struct Reindex<S> {
    s: S,
    outer: &'static str,
    tags: Tags,
}

impl<S: Serializer> Reindex<S> {
    fn tag(&self, inner: u32) -> Result<u32, S::Error> {
        self.tags.get(inner as usize).copied().ok_or_else(|| {
            ser::Error::custom(format!("{}: variant {inner} has no wire index", self.outer))
        })
    }
}

/// Refuses what is not an enum variant: only nested enums are reindexed.
macro_rules! not_a_variant {
    ($($name:ident($($arg:ty),*)),* $(,)?) => {$(
        fn $name(self, $(_: $arg),*) -> Result<S::Ok, S::Error> {
            Err(ser::Error::custom("only enum variants are reindexed"))
        }
    )*};
}

impl<S: Serializer> Serializer for Reindex<S> {
    type Ok = S::Ok;
    type Error = S::Error;
    type SerializeSeq = Impossible<S::Ok, S::Error>;
    type SerializeTuple = Impossible<S::Ok, S::Error>;
    type SerializeTupleStruct = Impossible<S::Ok, S::Error>;
    type SerializeTupleVariant = S::SerializeTupleVariant;
    type SerializeMap = Impossible<S::Ok, S::Error>;
    type SerializeStruct = Impossible<S::Ok, S::Error>;
    type SerializeStructVariant = S::SerializeStructVariant;

    not_a_variant! {
        serialize_bool(bool), serialize_i8(i8), serialize_i16(i16), serialize_i32(i32),
        serialize_i64(i64), serialize_u8(u8), serialize_u16(u16), serialize_u32(u32),
        serialize_u64(u64), serialize_f32(f32), serialize_f64(f64), serialize_char(char),
        serialize_str(&str), serialize_bytes(&[u8]), serialize_none(), serialize_unit(),
        serialize_unit_struct(&'static str),
    }

    fn serialize_some<T: Serialize + ?Sized>(self, _: &T) -> Result<S::Ok, S::Error> {
        Err(ser::Error::custom("only enum variants are reindexed"))
    }

    fn serialize_newtype_struct<T: Serialize + ?Sized>(
        self,
        _: &'static str,
        _: &T,
    ) -> Result<S::Ok, S::Error> {
        Err(ser::Error::custom("only enum variants are reindexed"))
    }

    fn serialize_unit_variant(
        self,
        _: &'static str,
        inner: u32,
        variant: &'static str,
    ) -> Result<S::Ok, S::Error> {
        let tag = self.tag(inner)?;
        self.s.serialize_unit_variant(self.outer, tag, variant)
    }

    fn serialize_newtype_variant<T: Serialize + ?Sized>(
        self,
        _: &'static str,
        inner: u32,
        variant: &'static str,
        value: &T,
    ) -> Result<S::Ok, S::Error> {
        let tag = self.tag(inner)?;
        self.s.serialize_newtype_variant(self.outer, tag, variant, value)
    }

    fn serialize_tuple_variant(
        self,
        _: &'static str,
        inner: u32,
        variant: &'static str,
        len: usize,
    ) -> Result<S::SerializeTupleVariant, S::Error> {
        let tag = self.tag(inner)?;
        self.s.serialize_tuple_variant(self.outer, tag, variant, len)
    }

    fn serialize_struct_variant(
        self,
        _: &'static str,
        inner: u32,
        variant: &'static str,
        len: usize,
    ) -> Result<S::SerializeStructVariant, S::Error> {
        let tag = self.tag(inner)?;
        self.s.serialize_struct_variant(self.outer, tag, variant, len)
    }

    fn serialize_seq(self, _: Option<usize>) -> Result<Self::SerializeSeq, S::Error> {
        Err(ser::Error::custom("only enum variants are reindexed"))
    }

    fn serialize_tuple(self, _: usize) -> Result<Self::SerializeTuple, S::Error> {
        Err(ser::Error::custom("only enum variants are reindexed"))
    }

    fn serialize_tuple_struct(
        self,
        _: &'static str,
        _: usize,
    ) -> Result<Self::SerializeTupleStruct, S::Error> {
        Err(ser::Error::custom("only enum variants are reindexed"))
    }

    fn serialize_map(self, _: Option<usize>) -> Result<Self::SerializeMap, S::Error> {
        Err(ser::Error::custom("only enum variants are reindexed"))
    }

    fn serialize_struct(
        self,
        _: &'static str,
        _: usize,
    ) -> Result<Self::SerializeStruct, S::Error> {
        Err(ser::Error::custom("only enum variants are reindexed"))
    }
}
