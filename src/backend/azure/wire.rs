//! Serde pieces the DPS and IoT Hub clients share to read answers and write bodies without
//! building `serde_json::Value` trees: a roll of tens of thousands of enrollments reads and
//! writes each record once, and a tree costs dozens of allocations a record where these cost a
//! few.
//!
//! - [`Text`]: a string that borrows from the answer when it holds no escape;
//! - [`Fields`]: a JSON object as (name, raw value) pairs borrowed from the answer, for the
//!   members of a record certroll does not manage and sends back unchanged;
//! - [`Kept`]: those members, owned as one JSON text a record keeps until its write;
//! - [`BulkResult`]: the answer of a DPS or IoT Hub bulk operation.

use serde::de::{self, Deserialize, Deserializer, MapAccess, Visitor};
use serde::ser::{Serialize, SerializeMap, Serializer};
use serde_json::value::RawValue;
use std::borrow::Cow;

/// A JSON string, borrowed from the answer when it holds no escape sequence.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Text<'a>(pub Cow<'a, str>);

impl std::ops::Deref for Text<'_> {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for Text<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<'a>(std::marker::PhantomData<&'a ()>);
        impl<'de: 'a, 'a> Visitor<'de> for V<'a> {
            type Value = Text<'a>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Text<'a>, E> {
                Ok(Text(Cow::Borrowed(v)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Text<'a>, E> {
                Ok(Text(Cow::Owned(v.to_string())))
            }
            fn visit_string<E: de::Error>(self, v: String) -> Result<Text<'a>, E> {
                Ok(Text(Cow::Owned(v)))
            }
        }
        d.deserialize_str(V(std::marker::PhantomData))
    }
}

impl Serialize for Text<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

/// A JSON object's members as they stand in the text, in order: each value unparsed (its
/// JSON text), so members are told apart and passed on without being read.
#[derive(Debug, Default)]
pub struct Fields<'a>(pub Vec<(Text<'a>, &'a RawValue)>);

impl<'de: 'a, 'a> Deserialize<'de> for Fields<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<'a>(std::marker::PhantomData<&'a ()>);
        impl<'de: 'a, 'a> Visitor<'de> for V<'a> {
            type Value = Fields<'a>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Fields<'a>, A::Error> {
                let mut out = Vec::with_capacity(map.size_hint().unwrap_or(4));
                while let Some(key) = map.next_key::<Text<'a>>()? {
                    out.push((key, map.next_value::<&'a RawValue>()?));
                }
                Ok(Fields(out))
            }
        }
        d.deserialize_map(V(std::marker::PhantomData))
    }
}

impl Serialize for Fields<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(Some(self.0.len()))?;
        for (k, v) in &self.0 {
            map.serialize_entry(k, v)?;
        }
        map.end()
    }
}

/// Members of a record that certroll does not manage, kept from its read for its write: one
/// JSON object text (usually a few dozen bytes), not a tree.
#[derive(Debug, Clone, Default)]
pub struct Kept(Option<Box<RawValue>>);

impl Kept {
    /// Keeps `fields` (nothing when there are none).
    pub fn new(fields: &Fields<'_>) -> Kept {
        if fields.0.is_empty() {
            return Kept(None);
        }
        // Serializing borrowed raw values cannot fail.
        Kept(serde_json::value::to_raw_value(fields).ok())
    }

    /// The kept members, borrowed from this record.
    pub fn fields(&self) -> Fields<'_> {
        match &self.0 {
            Some(raw) => serde_json::from_str(raw.get()).unwrap_or_default(),
            None => Fields::default(),
        }
    }

    /// Writes the kept members whose names `skip` refuses into `map`.
    pub fn write_into<M: SerializeMap>(
        &self,
        map: &mut M,
        skip: &dyn Fn(&str) -> bool,
    ) -> Result<(), M::Error> {
        for (k, v) in &self.fields().0 {
            if !skip(k) {
                map.serialize_entry(k, v)?;
            }
        }
        Ok(())
    }
}

/// The answer of a bulk operation, DPS's `BulkEnrollmentOperationResult` or IoT Hub's
/// `BulkRegistryOperationResult`: whether every entry succeeded, and each failed entry.
#[derive(Debug, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BulkResult {
    /// Whether every entry succeeded.
    #[serde(default)]
    pub is_successful: Option<bool>,
    /// The failed entries (None: the answer has no list).
    #[serde(default)]
    pub errors: Option<Vec<BulkError>>,
}

/// One failed entry of a bulk operation: DPS names it by `registrationId` and gives an
/// integer `errorCode` (HTTP status × 1000 + a sub-code), IoT Hub by `deviceId` with an error
/// code name.
#[derive(Debug, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BulkError {
    /// DPS's entry (an individual enrollment).
    #[serde(default)]
    pub registration_id: Option<String>,
    /// IoT Hub's entry (a device).
    #[serde(default)]
    pub device_id: Option<String>,
    /// The error code, a number (DPS) or a name (IoT Hub).
    #[serde(default)]
    pub error_code: Option<Code>,
    /// The service's message.
    #[serde(default)]
    pub error_status: Option<String>,
}

/// A bulk entry's error code, as either service spells it.
#[derive(Debug, serde::Deserialize)]
#[serde(untagged)]
pub enum Code {
    /// DPS's `errorCode`: HTTP status × 1000 + a sub-code.
    Number(i64),
    /// IoT Hub's `errorCode`: the error's name.
    Name(String),
}

impl Code {
    /// The code as a number (0 for a name).
    pub fn number(&self) -> i64 {
        match self {
            Code::Number(n) => *n,
            Code::Name(_) => 0,
        }
    }

    /// The code as text.
    pub fn text(&self) -> Cow<'_, str> {
        match self {
            Code::Number(n) => Cow::Owned(n.to_string()),
            Code::Name(s) => Cow::Borrowed(s),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kept_members_come_back_as_they_were_read() {
        let text = r#"{"a": {"x": [1, 2]}, "b\u0041": "q\"uote", "c": null}"#;
        let fields: Fields = serde_json::from_str(text).unwrap();
        assert_eq!(fields.0.len(), 3);
        assert_eq!(&*fields.0[1].0, "bA", "escaped names are read");
        let kept = Kept::new(&fields);
        let again: serde_json::Value =
            serde_json::from_str(&serde_json::to_string(&kept.fields()).unwrap()).unwrap();
        assert_eq!(again, serde_json::from_str::<serde_json::Value>(text).unwrap());
        assert!(Kept::new(&Fields::default()).fields().0.is_empty());
    }

    #[test]
    fn bulk_results_of_both_services_are_read() {
        let dps: BulkResult = serde_json::from_str(
            r#"{"isSuccessful": false, "errors": [{"registrationId": "d2", "errorCode": 409201, "errorStatus": "exists"}]}"#,
        )
        .unwrap();
        let e = &dps.errors.unwrap()[0];
        assert_eq!(e.error_code.as_ref().unwrap().number(), 409201);
        let hub: BulkResult = serde_json::from_str(
            r#"{"isSuccessful": false, "errors": [{"deviceId": "d2", "errorCode": "PreconditionFailed", "errorStatus": "etag", "moduleId": null}], "warnings": []}"#,
        )
        .unwrap();
        let e = &hub.errors.unwrap()[0];
        assert_eq!(e.error_code.as_ref().unwrap().text(), "PreconditionFailed");
        assert_eq!(e.device_id.as_deref(), Some("d2"));
    }
}
