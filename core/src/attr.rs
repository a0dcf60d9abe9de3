//! DynamoDB attribute values in the JSON shape of the DynamoDB and DynamoDB Streams APIs.
//!
//! The enum is externally tagged, which is exactly the wire shape: `{"S": "abc"}`,
//! `{"N": "1.50"}`, `{"B": "<base64>"}`, `{"BOOL": true}`, `{"NULL": true}`,
//! `{"M": {...}}`, `{"L": [...]}`, `{"SS": [...]}`, `{"NS": [...]}`, `{"BS": [...]}`.
//! Numbers are kept as the decimal strings DynamoDB sends (up to 38 significant digits), never
//! as floats.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// An item, or an item's key: attribute name to value, ordered by name.
pub type Item = BTreeMap<String, AttributeValue>;

/// One DynamoDB attribute value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum AttributeValue {
    /// A string.
    S(String),
    /// A number, exactly as DynamoDB wrote it.
    N(String),
    /// Binary data (base64 in JSON).
    B(#[serde(with = "b64")] Vec<u8>),
    /// A boolean.
    #[serde(rename = "BOOL")]
    Bool(bool),
    /// The null value (`{"NULL": true}`).
    #[serde(rename = "NULL")]
    Null(bool),
    /// A map of attribute values.
    M(BTreeMap<String, AttributeValue>),
    /// A list of attribute values.
    L(Vec<AttributeValue>),
    /// A string set.
    SS(Vec<String>),
    /// A number set.
    NS(Vec<String>),
    /// A binary set (each element base64 in JSON).
    BS(#[serde(with = "b64_list")] Vec<Vec<u8>>),
}

impl AttributeValue {
    /// The value as a dimension label: strings and numbers as written, booleans as
    /// `true`/`false`, null as `null`, anything else as its compact JSON.
    pub fn label(&self) -> String {
        match self {
            AttributeValue::S(s) | AttributeValue::N(s) => s.clone(),
            AttributeValue::Bool(b) => b.to_string(),
            AttributeValue::Null(_) => "null".to_owned(),
            other => serde_json::to_string(other).unwrap_or_default(),
        }
    }

    /// The number string of an `N` value.
    pub fn as_number(&self) -> Option<&str> {
        match self {
            AttributeValue::N(n) => Some(n),
            _ => None,
        }
    }

    /// The DynamoDB type descriptor of this value (`S`, `N`, `BOOL`, ...).
    pub fn type_name(&self) -> &'static str {
        match self {
            AttributeValue::S(_) => "S",
            AttributeValue::N(_) => "N",
            AttributeValue::B(_) => "B",
            AttributeValue::Bool(_) => "BOOL",
            AttributeValue::Null(_) => "NULL",
            AttributeValue::M(_) => "M",
            AttributeValue::L(_) => "L",
            AttributeValue::SS(_) => "SS",
            AttributeValue::NS(_) => "NS",
            AttributeValue::BS(_) => "BS",
        }
    }
}

/// Looks an attribute path (`a.b.c`, map keys only) up in an item.
pub fn lookup<'a>(item: &'a Item, path: &str) -> Option<&'a AttributeValue> {
    let mut parts = path.split('.');
    let mut current = item.get(parts.next()?)?;
    for part in parts {
        match current {
            AttributeValue::M(map) => current = map.get(part)?,
            _ => return None,
        }
    }
    Some(current)
}

mod b64 {
    use base64::{engine::general_purpose::STANDARD, Engine};
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(bytes: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&STANDARD.encode(bytes))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let text = String::deserialize(d)?;
        STANDARD
            .decode(text.as_bytes())
            .map_err(|e| serde::de::Error::custom(format!("invalid base64 in binary value: {e}")))
    }
}

mod b64_list {
    use base64::{engine::general_purpose::STANDARD, Engine};
    use serde::{ser::SerializeSeq, Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(list: &[Vec<u8>], s: S) -> Result<S::Ok, S::Error> {
        let mut seq = s.serialize_seq(Some(list.len()))?;
        for bytes in list {
            seq.serialize_element(&STANDARD.encode(bytes))?;
        }
        seq.end()
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Vec<u8>>, D::Error> {
        let texts = Vec::<String>::deserialize(d)?;
        texts
            .iter()
            .map(|t| {
                STANDARD.decode(t.as_bytes()).map_err(|e| {
                    serde::de::Error::custom(format!("invalid base64 in binary set: {e}"))
                })
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_type_round_trips_through_the_wire_shape() {
        let json = r#"{"b":{"B":"AQID"},"bool":{"BOOL":true},"bs":{"BS":["AQ==","Ag=="]},
            "l":{"L":[{"S":"x"},{"N":"1"}]},"m":{"M":{"inner":{"N":"12345678901234567890.123456789"}}},
            "n":{"N":"-0.50"},"null":{"NULL":true},"ns":{"NS":["1","2.5"]},"s":{"S":"hé"},"ss":{"SS":["a","b"]}}"#;
        let item: Item = serde_json::from_str(json).unwrap();
        assert_eq!(item["b"], AttributeValue::B(vec![1, 2, 3]));
        assert_eq!(item["bs"], AttributeValue::BS(vec![vec![1], vec![2]]));
        assert_eq!(item["n"], AttributeValue::N("-0.50".into()));
        assert_eq!(
            lookup(&item, "m.inner").and_then(AttributeValue::as_number),
            Some("12345678901234567890.123456789")
        );
        let back: Item = serde_json::from_str(&serde_json::to_string(&item).unwrap()).unwrap();
        assert_eq!(back, item);
    }

    #[test]
    fn an_unknown_type_descriptor_is_named_in_the_error() {
        let err = serde_json::from_str::<Item>(r#"{"a":{"X":"1"}}"#).unwrap_err();
        assert!(err.to_string().contains("unknown variant `X`"), "{err}");
    }
}
