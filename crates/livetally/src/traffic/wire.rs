//! Writes one generated event as JSON or protobuf, by hand, into a byte buffer.
//!
//! The generator feeds benchmarks at more than a million records a second, so
//! the encoders append straight into the record's buffer with no `format!`
//! and no intermediate message. The tests decode every record with the real
//! decoder, which keeps these writers honest.

#[cfg(test)]
use std::borrow::Cow;

#[cfg(test)]
use livetally_aggregator::{Action, Event, OrderLine};
use livetally_aggregator::{Currency, EventType};

/// Ids are `<letter>-<tag>-<n>`: the tag is 8 hex digits derived from the seed,
/// so two generators with different seeds never share an event or order id.
pub(super) type IdTag = [u8; 8];

/// One generated event, compact and `Copy`, so that the duplicate ring can keep
/// it and re-encode a byte-identical copy instead of storing payloads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Spec {
    /// Counter behind `event_id` (`e-<tag>-<12 hex digits>`).
    pub id: u64,
    /// What happened.
    pub ty: EventType,
    /// `live-<stream>`.
    pub stream: u32,
    /// `u-<viewer>`.
    pub viewer: u32,
    /// Event time, epoch ms.
    pub ts: i64,
    /// `shop-<n>`, when the producer sends it.
    pub seller: Option<u32>,
    /// `sku-<stream>-<product>`; meaningful for product events only.
    pub product: u32,
    /// Counter behind `order_id` (`o-<tag>-<n>`); purchase and refund only.
    pub order: u64,
    /// Units; purchase and refund only.
    pub quantity: u32,
    /// Minor units; purchase and refund only.
    pub unit_price: i64,
    /// The stream's currency; purchase and refund only.
    pub currency: Currency,
}

/// How one record goes on the wire. Kept with the [`Spec`] so a duplicate is
/// re-encoded exactly as the original was.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Wire {
    /// Protobuf rather than JSON.
    pub protobuf: bool,
    /// `ts` as an RFC 3339 string rather than integer ms.
    pub ts_text: bool,
    /// Whether the record carries a `content-type` header.
    pub labelled: bool,
}

impl Wire {
    /// The `content-type` header value, if the record carries one.
    pub(super) fn content_type(self) -> Option<&'static str> {
        match (self.labelled, self.protobuf) {
            (false, _) => None,
            (true, false) => Some(super::JSON),
            (true, true) => Some(super::PROTOBUF),
        }
    }
}

fn has_product(ty: EventType) -> bool {
    matches!(
        ty,
        EventType::Impression
            | EventType::Click
            | EventType::AddToCart
            | EventType::Purchase
            | EventType::Refund
    )
}

fn has_order(ty: EventType) -> bool {
    matches!(ty, EventType::Purchase | EventType::Refund)
}

/// Appends `spec` in `wire`'s encoding.
pub(super) fn encode(spec: &Spec, wire: Wire, tag: &IdTag, out: &mut Vec<u8>) {
    if wire.protobuf {
        protobuf(spec, wire.ts_text, tag, out)
    } else {
        json(spec, wire.ts_text, tag, out)
    }
}

/// The JSON object, fields in the contract's order, no whitespace.
pub(super) fn json(spec: &Spec, ts_text: bool, tag: &IdTag, out: &mut Vec<u8>) {
    out.extend_from_slice(b"{\"event_id\":\"");
    event_id(spec.id, tag, out);
    out.extend_from_slice(b"\",\"type\":\"");
    out.extend_from_slice(spec.ty.as_str().as_bytes());
    out.extend_from_slice(b"\",\"stream_id\":\"live-");
    decimal(u64::from(spec.stream), out);
    out.extend_from_slice(b"\",\"viewer_id\":\"u-");
    decimal(u64::from(spec.viewer), out);
    if ts_text {
        out.extend_from_slice(b"\",\"ts\":\"");
        rfc3339(spec.ts, out);
        out.push(b'"');
    } else {
        out.extend_from_slice(b"\",\"ts\":");
        signed(spec.ts, out);
    }
    if let Some(seller) = spec.seller {
        out.extend_from_slice(b",\"seller_id\":\"shop-");
        decimal(u64::from(seller), out);
        out.push(b'"');
    }
    if has_product(spec.ty) {
        out.extend_from_slice(b",\"product_id\":\"");
        product_id(spec, out);
        out.push(b'"');
    }
    if has_order(spec.ty) {
        out.extend_from_slice(b",\"order_id\":\"");
        order_id(spec.order, tag, out);
        out.extend_from_slice(b"\",\"quantity\":");
        decimal(u64::from(spec.quantity), out);
        out.extend_from_slice(b",\"unit_price\":");
        signed(spec.unit_price, out);
        out.extend_from_slice(b",\"currency\":\"");
        out.extend_from_slice(&spec.currency.0);
        out.push(b'"');
    }
    out.push(b'}');
}

/// `livetally.v1.ViewerEvent`, fields in number order (as prost writes them).
pub(super) fn protobuf(spec: &Spec, ts_text: bool, tag: &IdTag, out: &mut Vec<u8>) {
    string_field(1, out, |out| event_id(spec.id, tag, out));
    key(2, VARINT, out);
    varint(proto_type(spec.ty), out);
    string_field(3, out, |out| {
        out.extend_from_slice(b"live-");
        decimal(u64::from(spec.stream), out)
    });
    string_field(4, out, |out| {
        out.extend_from_slice(b"u-");
        decimal(u64::from(spec.viewer), out)
    });
    if ts_text {
        string_field(6, out, |out| rfc3339(spec.ts, out));
    } else {
        key(5, VARINT, out);
        varint(spec.ts as u64, out);
    }
    if let Some(seller) = spec.seller {
        string_field(7, out, |out| {
            out.extend_from_slice(b"shop-");
            decimal(u64::from(seller), out)
        });
    }
    if has_product(spec.ty) {
        string_field(8, out, |out| product_id(spec, out));
    }
    if has_order(spec.ty) {
        string_field(9, out, |out| order_id(spec.order, tag, out));
        key(10, VARINT, out);
        varint(u64::from(spec.quantity), out);
        key(11, VARINT, out);
        varint(spec.unit_price as u64, out);
        string_field(12, out, |out| out.extend_from_slice(&spec.currency.0));
    }
}

/// The `livetally.v1.EventType` number of `ty`.
pub(super) fn proto_type(ty: EventType) -> u64 {
    match ty {
        EventType::View => 1,
        EventType::Leave => 2,
        EventType::Impression => 3,
        EventType::Click => 4,
        EventType::AddToCart => 5,
        EventType::Purchase => 6,
        EventType::Refund => 7,
        EventType::Like => 8,
        EventType::Comment => 9,
        EventType::Share => 10,
        EventType::Follow => 11,
    }
}

/// The decoded form of `spec`, as the ingest layer would hand it over.
#[cfg(test)]
pub(super) fn to_event(spec: &Spec, tag: &IdTag) -> Event<'static> {
    let text = |write: &dyn Fn(&mut Vec<u8>)| -> Cow<'static, str> {
        let mut buf = Vec::with_capacity(32);
        write(&mut buf);
        // Every writer here emits ASCII only.
        Cow::Owned(String::from_utf8_lossy(&buf).into_owned())
    };
    let product = || text(&|out| product_id(spec, out));
    let line = || OrderLine {
        product_id: product(),
        order_id: text(&|out| order_id(spec.order, tag, out)),
        quantity: spec.quantity,
        unit_price: spec.unit_price,
        currency: spec.currency,
    };
    let action = match spec.ty {
        EventType::View => Action::View,
        EventType::Leave => Action::Leave,
        EventType::Impression => Action::Impression {
            product_id: product(),
        },
        EventType::Click => Action::Click {
            product_id: product(),
        },
        EventType::AddToCart => Action::AddToCart {
            product_id: product(),
        },
        EventType::Purchase => Action::Purchase(line()),
        EventType::Refund => Action::Refund(line()),
        EventType::Like => Action::Like,
        EventType::Comment => Action::Comment,
        EventType::Share => Action::Share,
        EventType::Follow => Action::Follow,
    };
    Event {
        event_id: text(&|out| event_id(spec.id, tag, out)),
        stream_id: Cow::Owned(format!("live-{}", spec.stream)),
        viewer_id: Cow::Owned(format!("u-{}", spec.viewer)),
        ts: spec.ts,
        seller_id: spec.seller.map(|s| Cow::Owned(format!("shop-{s}"))),
        action,
    }
}

/// `e-<tag>-<12 hex digits>`: 23 characters while the counter stays below
/// 2^48, which is every practical run.
pub(super) fn event_id(n: u64, tag: &IdTag, out: &mut Vec<u8>) {
    out.extend_from_slice(b"e-");
    out.extend_from_slice(tag);
    out.push(b'-');
    let digits = if n >> 48 == 0 { 12 } else { 16 };
    hex(n, digits, out);
}

/// `o-<tag>-<n>`.
pub(super) fn order_id(n: u64, tag: &IdTag, out: &mut Vec<u8>) {
    out.extend_from_slice(b"o-");
    out.extend_from_slice(tag);
    out.push(b'-');
    decimal(n, out);
}

/// `sku-<stream>-<product>`.
fn product_id(spec: &Spec, out: &mut Vec<u8>) {
    out.extend_from_slice(b"sku-");
    decimal(u64::from(spec.stream), out);
    out.push(b'-');
    decimal(u64::from(spec.product), out);
}

/// The low `digits` hex digits of `n`, zero-padded, lowercase.
pub(super) fn hex(n: u64, digits: u32, out: &mut Vec<u8>) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    for i in (0..digits).rev() {
        out.push(HEX[((n >> (4 * i)) & 0xf) as usize]);
    }
}

/// `n` in decimal.
pub(super) fn decimal(mut n: u64, out: &mut Vec<u8>) {
    let mut buf = [0u8; 20];
    let mut at = buf.len();
    loop {
        at -= 1;
        buf[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&buf[at..]);
}

/// `n` in decimal, with a sign when negative.
pub(super) fn signed(n: i64, out: &mut Vec<u8>) {
    if n < 0 {
        out.push(b'-');
    }
    decimal(n.unsigned_abs(), out);
}

/// `ms` as `YYYY-MM-DDTHH:MM:SS.mmmZ`. Callers keep `ms` within years
/// 1970..=9999; outside that the integer form is the only valid one.
pub(super) fn rfc3339(ms: i64, out: &mut Vec<u8>) {
    let days = ms.div_euclid(86_400_000);
    let in_day = ms.rem_euclid(86_400_000);
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    let two = |n: i64, out: &mut Vec<u8>| {
        out.extend_from_slice(&[b'0' + (n / 10) as u8, b'0' + (n % 10) as u8])
    };
    two(year / 100, out);
    two(year % 100, out);
    out.push(b'-');
    two(month, out);
    out.push(b'-');
    two(day, out);
    out.push(b'T');
    two(in_day / 3_600_000, out);
    out.push(b':');
    two(in_day / 60_000 % 60, out);
    out.push(b':');
    two(in_day / 1000 % 60, out);
    out.push(b'.');
    let millis = in_day % 1000;
    out.extend_from_slice(&[
        b'0' + (millis / 100) as u8,
        b'0' + (millis / 10 % 10) as u8,
        b'0' + (millis % 10) as u8,
    ]);
    out.push(b'Z');
}

/// Protobuf wire type of integers.
pub(super) const VARINT: u8 = 0;
/// Protobuf wire type of strings and bytes.
pub(super) const LEN: u8 = 2;

/// A field key (all field numbers here are below 16: one byte).
pub(super) fn key(field: u8, wire_type: u8, out: &mut Vec<u8>) {
    out.push(field << 3 | wire_type);
}

/// A base-128 varint; negative `int64`s arrive as their two's complement and
/// take ten bytes, as protobuf specifies.
pub(super) fn varint(mut n: u64, out: &mut Vec<u8>) {
    while n >= 0x80 {
        out.push(n as u8 | 0x80);
        n >>= 7;
    }
    out.push(n as u8);
}

/// A length-delimited field whose content `write` appends. Every generated
/// string is shorter than 128 bytes, so the length is one byte, patched after.
fn string_field(field: u8, out: &mut Vec<u8>, write: impl FnOnce(&mut Vec<u8>)) {
    key(field, LEN, out);
    let at = out.len();
    out.push(0);
    write(out);
    let len = out.len() - at - 1;
    debug_assert!(len < 0x80, "generated strings are short");
    out[at] = len as u8;
}
