//! JSON decoding: one object per record, read with `serde_json`'s parser into a
//! [`RawEvent`] without building a `serde_json::Value`.
//!
//! Every value of a known field is accepted whatever its JSON type (a string
//! quantity is `bad_value`, not a parse error), so a serde error always means
//! the record is not one JSON object: `malformed`. Strings without escapes
//! are borrowed from the record; nothing is allocated for them.
//!
//! A key given twice keeps its last value, as in JavaScript's `JSON.parse`.

use std::borrow::Cow;
use std::fmt;

use livetally_aggregator::{EventType, InvalidReason};
use serde::de::{self, Deserialize, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};

use super::validate::{Raw, RawEvent, RawType};

/// Parses `payload` as one JSON object into its raw fields.
pub(crate) fn parse(payload: &[u8]) -> Result<RawEvent<'_>, InvalidReason> {
    // Validating UTF-8 once up front rejects invalid bytes anywhere, including
    // inside ignored fields, and lets serde_json skip its per-string check.
    let text = std::str::from_utf8(payload).map_err(|_| InvalidReason::Malformed)?;
    serde_json::from_str::<JsonEvent<'_>>(text)
        .map(|event| event.0)
        .map_err(|_| InvalidReason::Malformed)
}

/// A [`RawEvent`] that serde can deserialize from a JSON object.
struct JsonEvent<'a>(RawEvent<'a>);

impl<'de> Deserialize<'de> for JsonEvent<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_map(EventVisitor)
    }
}

struct EventVisitor;

impl<'de> Visitor<'de> for EventVisitor {
    type Value = JsonEvent<'de>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a viewer event object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut raw = RawEvent::default();
        while let Some(key) = map.next_key::<Key>()? {
            let slot = match key {
                Key::Type => {
                    raw.ty = map.next_value::<JsonType>()?.0;
                    continue;
                }
                Key::Unknown => {
                    map.next_value::<IgnoredAny>()?;
                    continue;
                }
                Key::EventId => &mut raw.event_id,
                Key::StreamId => &mut raw.stream_id,
                Key::ViewerId => &mut raw.viewer_id,
                Key::Ts => &mut raw.ts,
                Key::SellerId => &mut raw.seller_id,
                Key::ProductId => &mut raw.product_id,
                Key::OrderId => &mut raw.order_id,
                Key::Quantity => &mut raw.quantity,
                Key::UnitPrice => &mut raw.unit_price,
                Key::Currency => &mut raw.currency,
            };
            *slot = map.next_value::<JsonRaw<'de>>()?.0;
        }
        Ok(JsonEvent(raw))
    }
}

/// The object keys the contract knows; anything else is skipped unread.
enum Key {
    EventId,
    Type,
    StreamId,
    ViewerId,
    Ts,
    SellerId,
    ProductId,
    OrderId,
    Quantity,
    UnitPrice,
    Currency,
    Unknown,
}

impl<'de> Deserialize<'de> for Key {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_identifier(KeyVisitor)
    }
}

struct KeyVisitor;

impl Visitor<'_> for KeyVisitor {
    type Value = Key;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a field name")
    }

    fn visit_str<E: de::Error>(self, key: &str) -> Result<Key, E> {
        Ok(match key {
            "event_id" => Key::EventId,
            "type" => Key::Type,
            "stream_id" => Key::StreamId,
            "viewer_id" => Key::ViewerId,
            "ts" => Key::Ts,
            "seller_id" => Key::SellerId,
            "product_id" => Key::ProductId,
            "order_id" => Key::OrderId,
            "quantity" => Key::Quantity,
            "unit_price" => Key::UnitPrice,
            "currency" => Key::Currency,
            _ => Key::Unknown,
        })
    }
}

/// Any JSON value, reduced to what validation needs.
struct JsonRaw<'a>(Raw<'a>);

impl<'de> Deserialize<'de> for JsonRaw<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(RawVisitor).map(JsonRaw)
    }
}

struct RawVisitor;

impl<'de> Visitor<'de> for RawVisitor {
    type Value = Raw<'de>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_borrowed_str<E: de::Error>(self, s: &'de str) -> Result<Raw<'de>, E> {
        Ok(Raw::Str(Cow::Borrowed(s)))
    }

    // Called for strings with escapes, which serde_json unescapes into scratch.
    fn visit_str<E: de::Error>(self, s: &str) -> Result<Raw<'de>, E> {
        Ok(Raw::Str(Cow::Owned(s.to_owned())))
    }

    fn visit_string<E: de::Error>(self, s: String) -> Result<Raw<'de>, E> {
        Ok(Raw::Str(Cow::Owned(s)))
    }

    fn visit_i64<E: de::Error>(self, n: i64) -> Result<Raw<'de>, E> {
        Ok(Raw::Int(n))
    }

    fn visit_u64<E: de::Error>(self, n: u64) -> Result<Raw<'de>, E> {
        Ok(i64::try_from(n).map_or(Raw::Other, Raw::Int))
    }

    // A number written with a fraction or exponent, even `2.0`, or an integer
    // beyond `u64`: never an integer field's value.
    fn visit_f64<E: de::Error>(self, _: f64) -> Result<Raw<'de>, E> {
        Ok(Raw::Other)
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<Raw<'de>, E> {
        Ok(Raw::Other)
    }

    fn visit_unit<E: de::Error>(self) -> Result<Raw<'de>, E> {
        Ok(Raw::Absent)
    }

    fn visit_none<E: de::Error>(self) -> Result<Raw<'de>, E> {
        Ok(Raw::Absent)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Raw<'de>, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(Raw::Other)
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Raw<'de>, A::Error> {
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        Ok(Raw::Other)
    }
}

/// The `type` value: a known wire name, anything else, or null.
struct JsonType(RawType);

impl<'de> Deserialize<'de> for JsonType {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let ty = match deserializer.deserialize_any(RawVisitor)? {
            Raw::Absent => RawType::Absent,
            Raw::Str(name) => EventType::from_wire(&name).map_or(RawType::Unknown, RawType::Known),
            Raw::Int(_) | Raw::Other => RawType::Unknown,
        };
        Ok(JsonType(ty))
    }
}
