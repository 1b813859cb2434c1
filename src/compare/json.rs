//! A borrowed JSON tree for comparison: strings and keys point into the body where they
//! need no unescaping, objects are sorted vectors instead of maps. Parsing a 100 KB
//! document this way costs about a third of building a `serde_json::Value`, which keeps
//! comparing two of them under a millisecond.

use std::borrow::Cow;
use std::fmt;

use serde::de::{Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::ser::{Serialize, SerializeMap, SerializeSeq, Serializer};

#[derive(Debug, Clone, PartialEq)]
pub enum Json<'a> {
    Null,
    Bool(bool),
    Num(Num),
    Str(Cow<'a, str>),
    Arr(Vec<Json<'a>>),
    /// Sorted by key; for a key written twice the last value wins, as in `serde_json`.
    Obj(Vec<(Cow<'a, str>, Json<'a>)>),
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Num {
    U(u64),
    I(i64),
    F(f64),
}

impl Num {
    /// By value: 1 equals 1.0; integers beyond f64's precision compare exactly.
    pub fn equals(self, other: Num) -> bool {
        match (self, other) {
            (Num::U(a), Num::U(b)) => a == b,
            (Num::I(a), Num::I(b)) => a == b,
            // Only negative numbers parse as I, so U and I never hold the same value.
            (Num::U(_), Num::I(_)) | (Num::I(_), Num::U(_)) => false,
            (a, b) => a.as_f64() == b.as_f64(),
        }
    }

    fn as_f64(self) -> f64 {
        match self {
            Num::U(n) => n as f64,
            Num::I(n) => n as f64,
            Num::F(f) => f,
        }
    }
}

/// Parses a body; `None` when it is not JSON.
pub fn parse(body: &[u8]) -> Option<Json<'_>> {
    serde_json::from_slice(body).ok()
}

struct JsonVisitor;

impl<'de> Visitor<'de> for JsonVisitor {
    type Value = Json<'de>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_unit<E>(self) -> Result<Json<'de>, E> {
        Ok(Json::Null)
    }
    fn visit_none<E>(self) -> Result<Json<'de>, E> {
        Ok(Json::Null)
    }
    fn visit_bool<E>(self, v: bool) -> Result<Json<'de>, E> {
        Ok(Json::Bool(v))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Json<'de>, E> {
        Ok(Json::Num(Num::U(v)))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Json<'de>, E> {
        Ok(Json::Num(if v >= 0 { Num::U(v as u64) } else { Num::I(v) }))
    }
    fn visit_f64<E>(self, v: f64) -> Result<Json<'de>, E> {
        Ok(Json::Num(Num::F(v)))
    }
    fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Json<'de>, E> {
        Ok(Json::Str(Cow::Borrowed(v)))
    }
    fn visit_str<E>(self, v: &str) -> Result<Json<'de>, E> {
        Ok(Json::Str(Cow::Owned(v.to_string())))
    }
    fn visit_string<E>(self, v: String) -> Result<Json<'de>, E> {
        Ok(Json::Str(Cow::Owned(v)))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Json<'de>, A::Error> {
        let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(0));
        while let Some(v) = seq.next_element()? {
            items.push(v);
        }
        Ok(Json::Arr(items))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Json<'de>, A::Error> {
        let mut entries: Vec<(Cow<'de, str>, Json<'de>)> = Vec::new();
        while let Some(key) = map.next_key::<Key<'de>>()? {
            entries.push((key.0, map.next_value()?));
        }
        entries.sort_by(|a, b| a.0.cmp(&b.0));
        // Stable sort keeps a repeated key in written order: keep the last one's value.
        entries.dedup_by(|later, kept| {
            if later.0 == kept.0 {
                std::mem::swap(later, kept);
                true
            } else {
                false
            }
        });
        Ok(Json::Obj(entries))
    }
}

impl<'de> Deserialize<'de> for Json<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(JsonVisitor)
    }
}

/// An object key, borrowed when it needs no unescaping.
struct Key<'a>(Cow<'a, str>);

impl<'de> Deserialize<'de> for Key<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct KeyVisitor;
        impl<'de> Visitor<'de> for KeyVisitor {
            type Value = Key<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("an object key")
            }
            fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Borrowed(v)))
            }
            fn visit_str<E>(self, v: &str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Owned(v.to_string())))
            }
            fn visit_string<E>(self, v: String) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Owned(v)))
            }
        }
        d.deserialize_str(KeyVisitor)
    }
}

impl Serialize for Json<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Json::Null => s.serialize_unit(),
            Json::Bool(b) => s.serialize_bool(*b),
            Json::Num(Num::U(n)) => s.serialize_u64(*n),
            Json::Num(Num::I(n)) => s.serialize_i64(*n),
            Json::Num(Num::F(f)) => s.serialize_f64(*f),
            Json::Str(t) => s.serialize_str(t),
            Json::Arr(items) => {
                let mut seq = s.serialize_seq(Some(items.len()))?;
                for i in items {
                    seq.serialize_element(i)?;
                }
                seq.end()
            }
            Json::Obj(entries) => {
                let mut map = s.serialize_map(Some(entries.len()))?;
                for (k, v) in entries {
                    map.serialize_entry(k.as_ref(), v)?;
                }
                map.end()
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_borrowed_sorted_and_last_key_wins() {
        let v = parse(br#"{"b":1,"a":[true,null,-2,2.5,"x\ny"],"b":3}"#).expect("json");
        let Json::Obj(entries) = &v else {
            panic!("{v:?}")
        };
        assert_eq!(entries.len(), 2);
        assert_eq!(entries[0].0, "a");
        assert!(matches!(entries[0].0, Cow::Borrowed(_)));
        assert_eq!(entries[1], (Cow::Borrowed("b"), Json::Num(Num::U(3))));
        assert_eq!(
            serde_json::to_string(&v).expect("text"),
            r#"{"a":[true,null,-2,2.5,"x\ny"],"b":3}"#
        );
        assert!(parse(b"{oops").is_none());
        assert!(Num::U(1).equals(Num::F(1.0)));
        assert!(Num::I(-1).equals(Num::F(-1.0)));
        assert!(!Num::U(9_007_199_254_740_993).equals(Num::U(9_007_199_254_740_992)));
    }
}
