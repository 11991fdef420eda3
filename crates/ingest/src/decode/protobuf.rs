//! Protobuf decoding: `livetally.v1.ViewerEvent` via prost into a
//! [`RawEvent`].
//!
//! prost rejects bytes that are not a `ViewerEvent` and strings that are not
//! UTF-8; both are `malformed`. Its strings are owned, so the event's strings
//! are moved into `Cow::Owned` without another copy.

use std::borrow::Cow;

use livetally_aggregator::{EventType, InvalidReason};
use livetally_proto::v1::{self as wire, viewer_event::Ts};
use prost::Message;

use super::validate::{Raw, RawEvent, RawType};

/// Decodes `payload` as a `ViewerEvent` into its raw fields.
pub(crate) fn parse(payload: &[u8]) -> Result<RawEvent<'static>, InvalidReason> {
    let event = wire::ViewerEvent::decode(payload).map_err(|_| InvalidReason::Malformed)?;
    Ok(RawEvent {
        ty: match wire::EventType::try_from(event.r#type) {
            Ok(ty) => from_wire(ty).map_or(RawType::Absent, RawType::Known),
            Err(_) => RawType::Unknown,
        },
        event_id: string(event.event_id),
        stream_id: string(event.stream_id),
        viewer_id: string(event.viewer_id),
        ts: match event.ts {
            Some(Ts::TsMs(ms)) => Raw::Int(ms),
            Some(Ts::TsRfc3339(s)) => Raw::Str(Cow::Owned(s)),
            None => Raw::Absent,
        },
        seller_id: string(event.seller_id),
        product_id: string(event.product_id),
        order_id: string(event.order_id),
        quantity: event.quantity.map_or(Raw::Absent, Raw::Int),
        unit_price: event.unit_price.map_or(Raw::Absent, Raw::Int),
        currency: string(event.currency),
    })
}

fn string(s: Option<String>) -> Raw<'static> {
    s.map_or(Raw::Absent, |s| Raw::Str(Cow::Owned(s)))
}

/// The contract's type for a wire enum value; `None` for `UNSPECIFIED`.
pub(crate) fn from_wire(ty: wire::EventType) -> Option<EventType> {
    Some(match ty {
        wire::EventType::Unspecified => return None,
        wire::EventType::View => EventType::View,
        wire::EventType::Leave => EventType::Leave,
        wire::EventType::Impression => EventType::Impression,
        wire::EventType::Click => EventType::Click,
        wire::EventType::AddToCart => EventType::AddToCart,
        wire::EventType::Purchase => EventType::Purchase,
        wire::EventType::Refund => EventType::Refund,
        wire::EventType::Like => EventType::Like,
        wire::EventType::Comment => EventType::Comment,
        wire::EventType::Share => EventType::Share,
        wire::EventType::Follow => EventType::Follow,
    })
}

/// The wire enum value of a contract type.
pub(crate) fn to_wire(ty: EventType) -> wire::EventType {
    match ty {
        EventType::View => wire::EventType::View,
        EventType::Leave => wire::EventType::Leave,
        EventType::Impression => wire::EventType::Impression,
        EventType::Click => wire::EventType::Click,
        EventType::AddToCart => wire::EventType::AddToCart,
        EventType::Purchase => wire::EventType::Purchase,
        EventType::Refund => wire::EventType::Refund,
        EventType::Like => wire::EventType::Like,
        EventType::Comment => wire::EventType::Comment,
        EventType::Share => wire::EventType::Share,
        EventType::Follow => wire::EventType::Follow,
    }
}
