//! Encoding [`Event`]s in the contract's wire formats, the inverse of
//! [`crate::decode()`]: for the load generator and tests.
//!
//! Both encoders write only the fields the event's type has (plus
//! `seller_id` when known) and `ts` as integer epoch ms, so that
//! `decode(encode(e)) == e` for every valid event. They never fail and write
//! into a caller's buffer without intermediate allocations.

use livetally_aggregator::{Action, Event, OrderLine};
use prost::encoding::{encode_key, encode_varint, WireType};

use crate::decode::proto_event_type;

/// The event as one JSON object, in the spec's field order.
pub fn to_json(event: &Event<'_>) -> Vec<u8> {
    let mut out = Vec::with_capacity(256);
    write_json(event, &mut out);
    out
}

/// Appends the event as one JSON object to `out` (see [`to_json`]).
pub fn write_json(event: &Event<'_>, out: &mut Vec<u8>) {
    out.extend_from_slice(b"{\"event_id\":");
    json_str(out, &event.event_id);
    out.extend_from_slice(b",\"type\":\"");
    out.extend_from_slice(event.action.event_type().as_str().as_bytes());
    out.extend_from_slice(b"\",\"stream_id\":");
    json_str(out, &event.stream_id);
    out.extend_from_slice(b",\"viewer_id\":");
    json_str(out, &event.viewer_id);
    out.extend_from_slice(b",\"ts\":");
    json_int(out, event.ts);
    if let Some(seller_id) = &event.seller_id {
        out.extend_from_slice(b",\"seller_id\":");
        json_str(out, seller_id);
    }
    match &event.action {
        Action::Impression { product_id }
        | Action::Click { product_id }
        | Action::AddToCart { product_id } => {
            out.extend_from_slice(b",\"product_id\":");
            json_str(out, product_id);
        }
        Action::Purchase(line) | Action::Refund(line) => {
            out.extend_from_slice(b",\"product_id\":");
            json_str(out, &line.product_id);
            out.extend_from_slice(b",\"order_id\":");
            json_str(out, &line.order_id);
            out.extend_from_slice(b",\"quantity\":");
            json_int(out, i64::from(line.quantity));
            out.extend_from_slice(b",\"unit_price\":");
            json_int(out, line.unit_price);
            out.extend_from_slice(b",\"currency\":");
            json_str(out, line.currency.as_str());
        }
        Action::View
        | Action::Leave
        | Action::Like
        | Action::Comment
        | Action::Share
        | Action::Follow => {}
    }
    out.push(b'}');
}

/// A JSON string literal: quotes, backslashes and control characters
/// escaped, everything else verbatim UTF-8.
fn json_str(out: &mut Vec<u8>, s: &str) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    out.push(b'"');
    let bytes = s.as_bytes();
    let mut start = 0;
    for (i, &b) in bytes.iter().enumerate() {
        let short: &[u8] = match b {
            b'"' => b"\\\"",
            b'\\' => b"\\\\",
            b'\n' => b"\\n",
            b'\r' => b"\\r",
            b'\t' => b"\\t",
            0x08 => b"\\b",
            0x0c => b"\\f",
            0x00..=0x1f => &[],
            _ => continue,
        };
        out.extend_from_slice(&bytes[start..i]);
        if short.is_empty() {
            out.extend_from_slice(&[
                b'\\',
                b'u',
                b'0',
                b'0',
                HEX[usize::from(b >> 4)],
                HEX[usize::from(b & 0xf)],
            ]);
        } else {
            out.extend_from_slice(short);
        }
        start = i + 1;
    }
    out.extend_from_slice(&bytes[start..]);
    out.push(b'"');
}

fn json_int(out: &mut Vec<u8>, n: i64) {
    if n < 0 {
        out.push(b'-');
    }
    let mut rest = n.unsigned_abs();
    let mut digits = [0u8; 20];
    let mut at = digits.len();
    loop {
        at -= 1;
        // `rest % 10` is a single digit, so the cast cannot truncate.
        digits[at] = b'0' + (rest % 10) as u8;
        rest /= 10;
        if rest == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[at..]);
}

/// The event as a protobuf `livetally.v1.ViewerEvent`, `ts` as `ts_ms`.
pub fn to_protobuf(event: &Event<'_>) -> Vec<u8> {
    let mut out = Vec::with_capacity(160);
    write_protobuf(event, &mut out);
    out
}

/// Appends the event as a protobuf `ViewerEvent` to `out` (see
/// [`to_protobuf`]); fields in tag order, as prost writes them.
pub fn write_protobuf(event: &Event<'_>, out: &mut Vec<u8>) {
    pb_str(out, 1, &event.event_id);
    pb_int(
        out,
        2,
        i64::from(proto_event_type(event.action.event_type()) as i32),
    );
    pb_str(out, 3, &event.stream_id);
    pb_str(out, 4, &event.viewer_id);
    pb_int(out, 5, event.ts);
    if let Some(seller_id) = &event.seller_id {
        pb_str(out, 7, seller_id);
    }
    match &event.action {
        Action::Impression { product_id }
        | Action::Click { product_id }
        | Action::AddToCart { product_id } => {
            pb_str(out, 8, product_id);
        }
        Action::Purchase(line) | Action::Refund(line) => pb_order_line(out, line),
        Action::View
        | Action::Leave
        | Action::Like
        | Action::Comment
        | Action::Share
        | Action::Follow => {}
    }
}

fn pb_order_line(out: &mut Vec<u8>, line: &OrderLine<'_>) {
    pb_str(out, 8, &line.product_id);
    pb_str(out, 9, &line.order_id);
    pb_int(out, 10, i64::from(line.quantity));
    pb_int(out, 11, line.unit_price);
    pb_str(out, 12, line.currency.as_str());
}

fn pb_str(out: &mut Vec<u8>, tag: u32, s: &str) {
    encode_key(tag, WireType::LengthDelimited, out);
    encode_varint(s.len() as u64, out);
    out.extend_from_slice(s.as_bytes());
}

/// An `int64` (or enum) field: the two's-complement value as a varint.
fn pb_int(out: &mut Vec<u8>, tag: u32, n: i64) {
    encode_key(tag, WireType::Varint, out);
    encode_varint(n as u64, out);
}

#[cfg(test)]
mod tests;
