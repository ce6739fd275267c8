//! Strict JSON for the tools doctor reads (`cryptsetup luksDump
//! --dump-json-metadata`, `nft -j list ruleset`).
//!
//! `serde_json::Value` keeps the *last* of two equal keys in an object, so
//! `{"tpm2-pcrs": [7], "tpm2-pcrs": []}` would be judged by a value another
//! reader (jq, cryptsetup's own json-c) may not use. Neither tool ever
//! prints a key twice, so a duplicate means the text is not what the tool
//! printed: [`parse`] refuses it, and the check says unknown. Input is also
//! bounded ([`super::MAX_INPUT`]); nesting is bounded by serde_json's
//! recursion limit (128), which returns an error, never overflows the stack.

use std::fmt;

use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Value};

/// Parses `text` as one JSON value, refusing duplicate keys and input over
/// [`super::MAX_INPUT`] bytes. The error is one line, safe to show.
pub fn parse(text: &str) -> Result<Value, String> {
    if text.len() > super::MAX_INPUT {
        return Err(format!("{} bytes, more than the {} doctor reads", text.len(), super::MAX_INPUT));
    }
    serde_json::from_str::<Strict>(text).map(|s| s.0).map_err(|e| crate::protocol::sanitize(&e.to_string(), 200))
}

/// A `Value` whose objects had no duplicate keys.
struct Strict(Value);

impl<'de> Deserialize<'de> for Strict {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(StrictVisitor).map(Strict)
    }
}

struct StrictVisitor;

impl<'de> Visitor<'de> for StrictVisitor {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        // JSON has no NaN or infinity; from_f64 maps them to null anyway.
        Ok(serde_json::Number::from_f64(v).map_or(Value::Null, Value::Number))
    }

    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_owned()))
    }

    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }

    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut out = Vec::new();
        while let Some(Strict(v)) = seq.next_element()? {
            out.push(v);
        }
        Ok(Value::Array(out))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut out = Map::new();
        while let Some(k) = map.next_key::<String>()? {
            if out.contains_key(&k) {
                return Err(de::Error::custom(format_args!(
                    "the key {:?} appears twice in one object",
                    crate::protocol::sanitize(&k, 60)
                )));
            }
            let Strict(v) = map.next_value()?;
            out.insert(k, v);
        }
        Ok(Value::Object(out))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn duplicate_keys_are_refused_at_any_depth() {
        assert_eq!(parse(r#"{"a": [1, {"b": null}], "c": 1.5}"#).unwrap()["a"][1]["b"], Value::Null);
        let e = parse(r#"{"t": {"tpm2-pcrs": [7], "tpm2-pcrs": []}}"#).unwrap_err();
        assert!(e.contains("\"tpm2-pcrs\" appears twice"), "{e}");
        assert!(parse(r#"[{"a":1,"a":1}]"#).is_err());
    }

    #[test]
    fn deep_or_large_or_broken_input_is_an_error_not_a_crash() {
        assert!(parse(&"[".repeat(100_000)).is_err());
        assert!(parse(&format!("\"{}\"", "x".repeat(super::super::MAX_INPUT))).unwrap_err().contains("more than"));
        assert!(parse("{\"a\":1} trailing").is_err());
        assert!(parse("").is_err());
    }
}
