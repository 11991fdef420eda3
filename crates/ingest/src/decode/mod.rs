//! Decoding and validating one Kafka record into an [`Event`] (spec §1).
//!
//! [`decode`] picks the encoding from the `content-type` header or by
//! sniffing ([`Encoding`]), parses, then applies the contract's field rules,
//! shared by both encodings. An `Err` is the record's [`InvalidReason`]; the
//! caller sends the record to the dead-letter topic unchanged.
//!
//! # Which reason wins
//! A record is checked in this order, and the first failure is its reason:
//! 1. size: longer than [`DecodeConfig::max_event_bytes`] → `too_large`
//!    (before any parsing);
//! 2. syntax: not one JSON object / not a `ViewerEvent`, not UTF-8, or empty
//!    → `malformed`;
//! 3. `type`: absent or null (protobuf `EVENT_TYPE_UNSPECIFIED`) →
//!    `missing_field`; not a string, or not a known name or number →
//!    `unknown_type`;
//! 4. the remaining fields in the spec table's order — `event_id`,
//!    `stream_id`, `viewer_id`, `ts`, `seller_id`, `product_id`, `order_id`,
//!    `quantity`, `unit_price`, `currency` — skipping those the type does not
//!    have: absent or null → `missing_field`, present but wrong →
//!    `bad_value` (`bad_timestamp` for `ts`).
//!
//! # Rules where the spec is silent
//! - Ids (`event_id`, `stream_id`, `viewer_id`, `product_id`, `order_id`,
//!   `seller_id`) are 1–[`MAX_ID_BYTES`] bytes of UTF-8; an empty `seller_id`
//!   means "unknown", like an absent one.
//! - `quantity` is at most [`MAX_QUANTITY`] and `unit_price` at most
//!   [`MAX_UNIT_PRICE`], so `quantity × unit_price` never overflows.
//! - Integers must be JSON integer literals: `2.0` and `2e0` are not integers.
//! - `ts` lies between the epoch and [`MAX_TS_MS`] (year 9999); RFC 3339
//!   times are truncated to the millisecond. Live (`now_ms` given), it may be
//!   at most [`DecodeConfig::max_future_skew_ms`] ahead of the wall clock;
//!   in replay there is no clock guard.
//! - `currency` must be one of [`ISO_4217`], in capitals.
//! - Fields the type does not have are ignored, not validated (in JSON they
//!   must still be well-formed), except `seller_id`, which every type may
//!   carry.
//! - A JSON key given twice keeps its last value; so does a protobuf field.
//! - An empty record value is `malformed` in both encodings.
//! - A header names the encoding when it is one [`Encoding::from_content_type`]
//!   knows; otherwise the bytes are sniffed, and a sniffed record that starts
//!   with whitespace and is not JSON gets a second try as protobuf (its first
//!   bytes may be a newline-valued tag and a whitespace-valued length).

mod currency;
mod json;
mod protobuf;
mod validate;

#[cfg(test)]
mod tests;
#[cfg(test)]
mod throughput;

use livetally_aggregator::{Event, EventTime, InvalidReason};

pub use currency::{is_iso4217, ISO_4217};
pub use validate::{MAX_ID_BYTES, MAX_QUANTITY, MAX_TS_MS, MAX_UNIT_PRICE};

pub(crate) use protobuf::to_wire as proto_event_type;

/// How a record's value is encoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Encoding {
    /// One JSON object, UTF-8.
    Json,
    /// A protobuf `livetally.v1.ViewerEvent`.
    Protobuf,
}

impl Encoding {
    /// The encoding a `content-type` header names, ignoring parameters
    /// (`; charset=utf-8`) and case. Besides `application/json` and
    /// `application/x-protobuf` it accepts `application/protobuf` and
    /// `application/vnd.google.protobuf`; `None` for anything else.
    pub fn from_content_type(ct: &[u8]) -> Option<Encoding> {
        let essence = ct
            .split(|&b| b == b';')
            .next()
            .unwrap_or_default()
            .trim_ascii();
        let is = |name: &str| essence.eq_ignore_ascii_case(name.as_bytes());
        if is("application/json") {
            Some(Encoding::Json)
        } else if is("application/x-protobuf")
            || is("application/protobuf")
            || is("application/vnd.google.protobuf")
        {
            Some(Encoding::Protobuf)
        } else {
            None
        }
    }

    /// Guesses from the bytes: JSON when the first non-whitespace byte is
    /// `{`, protobuf otherwise. ([`decode`] retries a sniffed record that
    /// starts with whitespace as protobuf when it is not JSON.)
    pub fn sniff(payload: &[u8]) -> Encoding {
        match payload
            .iter()
            .find(|b| !matches!(b, b' ' | b'\t' | b'\n' | b'\r'))
        {
            Some(b'{') => Encoding::Json,
            _ => Encoding::Protobuf,
        }
    }

    /// The canonical `content-type` header value.
    pub fn content_type(self) -> &'static str {
        match self {
            Encoding::Json => "application/json",
            Encoding::Protobuf => "application/x-protobuf",
        }
    }
}

/// Limits applied while decoding.
#[derive(Clone, Debug)]
pub struct DecodeConfig {
    /// Largest accepted record value in bytes; longer ones are `too_large`.
    pub max_event_bytes: usize,
    /// How far, in ms, `ts` may be ahead of the wall clock when running live
    /// before it is `bad_timestamp`.
    pub max_future_skew_ms: i64,
}

impl Default for DecodeConfig {
    fn default() -> Self {
        DecodeConfig {
            max_event_bytes: 65_536,
            max_future_skew_ms: 300_000,
        }
    }
}

/// Decodes and validates one record value.
///
/// `content_type` is the record's `content-type` header, if any. `now_ms`:
/// the wall clock in live mode (run/demo); None in replay (no clock guard).
/// Strings are borrowed from `payload` where the encoding allows it.
pub fn decode<'a>(
    payload: &'a [u8],
    content_type: Option<&[u8]>,
    now_ms: Option<i64>,
    config: &DecodeConfig,
) -> Result<Event<'a>, InvalidReason> {
    if payload.len() > config.max_event_bytes {
        return Err(InvalidReason::TooLarge);
    }
    // An empty value holds no event; for protobuf it would otherwise read as
    // an all-default message and be reported as `missing_field`.
    if payload.is_empty() {
        return Err(InvalidReason::Malformed);
    }
    let latest_ts: EventTime = match now_ms {
        Some(now) => now.saturating_add(config.max_future_skew_ms).min(MAX_TS_MS),
        None => MAX_TS_MS,
    };
    let raw = match content_type.and_then(Encoding::from_content_type) {
        Some(Encoding::Json) => json::parse(payload)?,
        Some(Encoding::Protobuf) => protobuf::parse(payload)?,
        None => match Encoding::sniff(payload) {
            // A protobuf record can look like whitespace and then `{`: field 1
            // (0x0a, a newline) of length 9, 10, 13 or 32 whose text starts
            // with `{`. Only a record that starts with `{` itself is surely JSON.
            Encoding::Json if payload.first() != Some(&b'{') => match json::parse(payload) {
                Ok(raw) => raw,
                Err(_) => protobuf::parse(payload)?,
            },
            Encoding::Json => json::parse(payload)?,
            Encoding::Protobuf => protobuf::parse(payload)?,
        },
    };
    validate::validate(raw, latest_ts)
}
