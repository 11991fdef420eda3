//! The contract's field rules (spec §1), written once for both encodings.
//!
//! Each decoder only turns its wire format into a [`RawEvent`]: every known
//! field as "absent", "a string", "an integer" or "something else". This
//! module decides validity, so JSON and protobuf cannot drift apart.
//!
//! Fields are checked in a fixed order and the first failure is the reason:
//! `type` first (it decides which fields are required), then the spec table's
//! order: `event_id`, `stream_id`, `viewer_id`, `ts`, `seller_id`,
//! `product_id`, `order_id`, `quantity`, `unit_price`, `currency`.

use std::borrow::Cow;

use livetally_aggregator::{
    Action, Currency, Event, EventTime, EventType, InvalidReason, OrderLine,
};
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

use super::currency::is_iso4217;

/// Longest accepted id (`event_id`, `stream_id`, `viewer_id`, `seller_id`,
/// `product_id`, `order_id`), in UTF-8 bytes.
pub const MAX_ID_BYTES: usize = 128;

/// Largest accepted `quantity`; bounds `quantity × unit_price`.
pub const MAX_QUANTITY: u32 = 1_000_000;

/// Largest accepted `unit_price` in minor units (10^12, ten billion dollars):
/// with [`MAX_QUANTITY`], one line's amount stays below 10^18, far inside `i64`.
pub const MAX_UNIT_PRICE: i64 = 1_000_000_000_000;

/// Latest accepted event time, 9999-12-31T23:59:59.999Z, the last instant
/// RFC 3339 can write. Integer `ts` gets the same bound, which also keeps the
/// aggregator's window arithmetic far from overflow.
pub const MAX_TS_MS: EventTime = 253_402_300_799_999;

/// One field as the wire carried it, before validation.
#[derive(Debug, Default)]
pub(crate) enum Raw<'a> {
    /// Not in the record, or JSON `null`.
    #[default]
    Absent,
    /// A string; borrowed from the record when it needed no unescaping.
    Str(Cow<'a, str>),
    /// An integer that fits `i64`.
    Int(i64),
    /// Any other value: a float, a bool, an array, an object, or an integer
    /// outside `i64`. Always invalid where a value is required.
    Other,
}

/// The `type` field as the wire carried it.
#[derive(Debug, Default)]
pub(crate) enum RawType {
    /// Not in the record, JSON `null`, or protobuf `EVENT_TYPE_UNSPECIFIED`.
    #[default]
    Absent,
    /// One of the contract's types.
    Known(EventType),
    /// Anything else: an unknown name or number, or a JSON non-string.
    Unknown,
}

/// Every field the contract knows, undecided.
#[derive(Debug, Default)]
pub(crate) struct RawEvent<'a> {
    pub ty: RawType,
    pub event_id: Raw<'a>,
    pub stream_id: Raw<'a>,
    pub viewer_id: Raw<'a>,
    pub ts: Raw<'a>,
    pub seller_id: Raw<'a>,
    pub product_id: Raw<'a>,
    pub order_id: Raw<'a>,
    pub quantity: Raw<'a>,
    pub unit_price: Raw<'a>,
    pub currency: Raw<'a>,
}

/// Applies the contract's rules. `latest_ts` is the latest event time
/// accepted: [`MAX_TS_MS`], or earlier when the live clock guard is on.
pub(crate) fn validate(
    raw: RawEvent<'_>,
    latest_ts: EventTime,
) -> Result<Event<'_>, InvalidReason> {
    let ty = match raw.ty {
        RawType::Known(ty) => ty,
        RawType::Absent => return Err(InvalidReason::MissingField),
        RawType::Unknown => return Err(InvalidReason::UnknownType),
    };
    let event_id = id(raw.event_id)?;
    let stream_id = id(raw.stream_id)?;
    let viewer_id = id(raw.viewer_id)?;
    let ts = timestamp(raw.ts, latest_ts)?;
    let seller_id = seller_id(raw.seller_id)?;
    let action = match ty {
        EventType::View => Action::View,
        EventType::Leave => Action::Leave,
        EventType::Impression => Action::Impression {
            product_id: id(raw.product_id)?,
        },
        EventType::Click => Action::Click {
            product_id: id(raw.product_id)?,
        },
        EventType::AddToCart => Action::AddToCart {
            product_id: id(raw.product_id)?,
        },
        EventType::Purchase => Action::Purchase(order_line(
            raw.product_id,
            raw.order_id,
            raw.quantity,
            raw.unit_price,
            raw.currency,
        )?),
        EventType::Refund => Action::Refund(order_line(
            raw.product_id,
            raw.order_id,
            raw.quantity,
            raw.unit_price,
            raw.currency,
        )?),
        EventType::Like => Action::Like,
        EventType::Comment => Action::Comment,
        EventType::Share => Action::Share,
        EventType::Follow => Action::Follow,
    };
    Ok(Event {
        event_id,
        stream_id,
        viewer_id,
        ts,
        seller_id,
        action,
    })
}

fn order_line<'a>(
    product_id: Raw<'a>,
    order_id: Raw<'a>,
    quantity: Raw<'a>,
    unit_price: Raw<'a>,
    currency: Raw<'a>,
) -> Result<OrderLine<'a>, InvalidReason> {
    Ok(OrderLine {
        product_id: id(product_id)?,
        order_id: id(order_id)?,
        quantity: self::quantity(quantity)?,
        unit_price: self::unit_price(unit_price)?,
        currency: self::currency(currency)?,
    })
}

/// A required id: a string of 1 to [`MAX_ID_BYTES`] bytes.
fn id(raw: Raw<'_>) -> Result<Cow<'_, str>, InvalidReason> {
    match raw {
        Raw::Str(s) if !s.is_empty() && s.len() <= MAX_ID_BYTES => Ok(s),
        Raw::Absent => Err(InvalidReason::MissingField),
        _ => Err(InvalidReason::BadValue),
    }
}

/// The optional `seller_id`: an empty string means "not known", like absence.
fn seller_id(raw: Raw<'_>) -> Result<Option<Cow<'_, str>>, InvalidReason> {
    match raw {
        Raw::Absent => Ok(None),
        Raw::Str(s) if s.is_empty() => Ok(None),
        Raw::Str(s) if s.len() <= MAX_ID_BYTES => Ok(Some(s)),
        _ => Err(InvalidReason::BadValue),
    }
}

/// Integer epoch ms or an RFC 3339 string, between the epoch and `latest`.
fn timestamp(raw: Raw<'_>, latest: EventTime) -> Result<EventTime, InvalidReason> {
    let ms = match raw {
        Raw::Int(ms) => ms,
        Raw::Str(s) => rfc3339_ms(&s).ok_or(InvalidReason::BadTimestamp)?,
        Raw::Absent => return Err(InvalidReason::MissingField),
        Raw::Other => return Err(InvalidReason::BadTimestamp),
    };
    if (0..=latest).contains(&ms) {
        Ok(ms)
    } else {
        Err(InvalidReason::BadTimestamp)
    }
}

/// Parses RFC 3339 into epoch ms, truncating below the millisecond. `None`
/// when unparsable or before the epoch (even by a fraction of a millisecond).
pub(crate) fn rfc3339_ms(s: &str) -> Option<EventTime> {
    let nanos = OffsetDateTime::parse(s, &Rfc3339)
        .ok()?
        .unix_timestamp_nanos();
    if nanos < 0 {
        return None;
    }
    EventTime::try_from(nanos / 1_000_000).ok()
}

fn quantity(raw: Raw<'_>) -> Result<u32, InvalidReason> {
    match raw {
        Raw::Int(q) if (1..=i64::from(MAX_QUANTITY)).contains(&q) => {
            u32::try_from(q).map_err(|_| InvalidReason::BadValue)
        }
        Raw::Absent => Err(InvalidReason::MissingField),
        _ => Err(InvalidReason::BadValue),
    }
}

fn unit_price(raw: Raw<'_>) -> Result<i64, InvalidReason> {
    match raw {
        Raw::Int(p) if (0..=MAX_UNIT_PRICE).contains(&p) => Ok(p),
        Raw::Absent => Err(InvalidReason::MissingField),
        _ => Err(InvalidReason::BadValue),
    }
}

fn currency(raw: Raw<'_>) -> Result<Currency, InvalidReason> {
    match raw {
        Raw::Str(s) => match <[u8; 3]>::try_from(s.as_bytes()) {
            Ok(code) if is_iso4217(code) => Ok(Currency(code)),
            _ => Err(InvalidReason::BadValue),
        },
        Raw::Absent => Err(InvalidReason::MissingField),
        _ => Err(InvalidReason::BadValue),
    }
}
