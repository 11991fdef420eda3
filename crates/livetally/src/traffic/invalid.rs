//! Hand-built invalid records, each with exactly one defect, so the reason the
//! decoder must give is unambiguous (see `livetally_ingest::decode`'s "which
//! reason wins").
//!
//! They are rare (0.5 % by default), so clarity beats speed here: each case is
//! a list of fields written by one small JSON or protobuf writer.

use livetally_aggregator::InvalidReason;

use super::rng::Rng;
use super::wire::{self, IdTag, LEN, VARINT};

/// A field value as the invalid record carries it.
#[derive(Clone, Debug)]
enum Value {
    /// A JSON string / protobuf string.
    Str(String),
    /// A JSON integer / protobuf varint.
    Int(i64),
    /// JSON only: written verbatim (`null`, a float, …).
    Json(&'static str),
    /// Raw bytes inside a string (for invalid UTF-8).
    Bytes(Vec<u8>),
}

/// Where the invalid record pretends to come from.
pub(super) struct Origin<'a> {
    pub tag: &'a IdTag,
    /// Counter behind the record's `event_id` (`x-<tag>-<n>`, never a valid id).
    pub id: u64,
    pub stream: u32,
    pub viewer: u32,
    pub seller: u32,
    pub ts: i64,
}

/// One invalid record's payload, its `content-type` and the reason the
/// decoder must report.
pub(super) struct Invalid {
    pub payload: Vec<u8>,
    pub content_type: Option<&'static str>,
    pub reason: InvalidReason,
}

/// The defects, with their reasons. Weights are equal: every reason shows up
/// in any run of a few thousand records.
#[derive(Clone, Copy, Debug)]
enum Defect {
    TruncatedJson,
    RandomBytes,
    InvalidUtf8,
    TruncatedProtobuf,
    NoOrderId,
    NoProductId,
    NullViewerId,
    Teleport,
    ZeroQuantity,
    NegativePrice,
    LowercaseCurrency,
    OverlongId,
    EmptyEventId,
    TsYesterday,
    TsImpossibleDate,
    TsBeforeEpoch,
}

const JSON_DEFECTS: [Defect; 15] = [
    Defect::TruncatedJson,
    Defect::RandomBytes,
    Defect::InvalidUtf8,
    Defect::NoOrderId,
    Defect::NoProductId,
    Defect::NullViewerId,
    Defect::Teleport,
    Defect::ZeroQuantity,
    Defect::NegativePrice,
    Defect::LowercaseCurrency,
    Defect::OverlongId,
    Defect::EmptyEventId,
    Defect::TsYesterday,
    Defect::TsImpossibleDate,
    Defect::TsBeforeEpoch,
];

const PROTOBUF_DEFECTS: [Defect; 14] = [
    Defect::TruncatedProtobuf,
    Defect::InvalidUtf8,
    Defect::NoOrderId,
    Defect::NoProductId,
    Defect::NullViewerId,
    Defect::Teleport,
    Defect::ZeroQuantity,
    Defect::NegativePrice,
    Defect::LowercaseCurrency,
    Defect::OverlongId,
    Defect::EmptyEventId,
    Defect::TsYesterday,
    Defect::TsImpossibleDate,
    Defect::TsBeforeEpoch,
];

/// One invalid record in JSON (or, when `protobuf`, in protobuf).
/// `labelled`: whether it carries a `content-type` header; records that could
/// be sniffed as the wrong encoding are always labelled.
pub(super) fn record(
    origin: &Origin<'_>,
    protobuf: bool,
    labelled: bool,
    rng: &mut Rng,
) -> Invalid {
    let defects: &[Defect] = if protobuf {
        &PROTOBUF_DEFECTS
    } else {
        &JSON_DEFECTS
    };
    let defect = defects[rng.below(defects.len() as u64) as usize];
    let (reason, payload, sniffable) = build(defect, origin, protobuf, rng);
    let content_type = match (labelled || !sniffable, protobuf) {
        (false, _) => None,
        (true, false) => Some(super::JSON),
        (true, true) => Some(super::PROTOBUF),
    };
    Invalid {
        payload,
        content_type,
        reason,
    }
}

/// The reason, the payload, and whether sniffing would pick the encoding it
/// was written in.
fn build(
    defect: Defect,
    o: &Origin<'_>,
    protobuf: bool,
    rng: &mut Rng,
) -> (InvalidReason, Vec<u8>, bool) {
    use InvalidReason::*;
    let mut fields = purchase(o);
    let ty = |fields: &mut Vec<(&'static str, Value)>, name: &str| {
        set(fields, "type", Value::Str(name.to_owned()))
    };
    let reason = match defect {
        Defect::TruncatedJson => {
            let mut out = Vec::new();
            write_json(&fields, &mut out);
            let cut = rng.between(1, out.len() as u64 - 1) as usize;
            out.truncate(cut);
            // Sniffing sees the leading `{`.
            return (Malformed, out, true);
        }
        Defect::RandomBytes => {
            let len = rng.between(8, 64) as usize;
            // No newline: `gen --out` writes one record a line.
            let out = (0..len)
                .map(|_| match rng.next_u64() as u8 {
                    b'\n' => 0,
                    byte => byte,
                })
                .collect();
            // Random bytes may look like anything to a sniffer.
            return (Malformed, out, false);
        }
        Defect::TruncatedProtobuf => {
            let mut out = Vec::new();
            write_protobuf(&fields, &mut out);
            // Cut inside the first string (event_id starts at byte 2): its
            // length prefix then promises more bytes than there are.
            let cut = rng.between(3, 10) as usize;
            out.truncate(cut);
            return (Malformed, out, true);
        }
        Defect::InvalidUtf8 => {
            set(
                &mut fields,
                "viewer_id",
                Value::Bytes(b"u-\xff\xfe\xc3".to_vec()),
            );
            Malformed
        }
        Defect::NoOrderId => {
            unset(&mut fields, "order_id");
            MissingField
        }
        Defect::NoProductId => {
            ty(&mut fields, "click");
            keep_only(
                &mut fields,
                &[
                    "event_id",
                    "type",
                    "stream_id",
                    "viewer_id",
                    "ts",
                    "seller_id",
                ],
            );
            MissingField
        }
        Defect::NullViewerId => {
            ty(&mut fields, "view");
            keep_only(
                &mut fields,
                &[
                    "event_id",
                    "type",
                    "stream_id",
                    "viewer_id",
                    "ts",
                    "seller_id",
                ],
            );
            if protobuf {
                unset(&mut fields, "viewer_id");
            } else {
                set(&mut fields, "viewer_id", Value::Json("null"));
            }
            MissingField
        }
        Defect::Teleport => {
            if protobuf {
                set(&mut fields, "type", Value::Int(99));
            } else {
                ty(&mut fields, "teleport");
            }
            UnknownType
        }
        Defect::ZeroQuantity => {
            set(&mut fields, "quantity", Value::Int(0));
            BadValue
        }
        Defect::NegativePrice => {
            set(&mut fields, "unit_price", Value::Int(-1999));
            BadValue
        }
        Defect::LowercaseCurrency => {
            set(&mut fields, "currency", Value::Str("usd".to_owned()));
            BadValue
        }
        Defect::OverlongId => {
            set(
                &mut fields,
                "product_id",
                Value::Str(format!("sku-{}-{}", o.stream, "x".repeat(200))),
            );
            BadValue
        }
        Defect::EmptyEventId => {
            set(&mut fields, "event_id", Value::Str(String::new()));
            BadValue
        }
        Defect::TsYesterday => {
            set(&mut fields, "ts", Value::Str("yesterday".to_owned()));
            BadTimestamp
        }
        Defect::TsImpossibleDate => {
            set(
                &mut fields,
                "ts",
                Value::Str("2025-02-30T25:61:00Z".to_owned()),
            );
            BadTimestamp
        }
        Defect::TsBeforeEpoch => {
            set(&mut fields, "ts", Value::Int(-86_400_000));
            BadTimestamp
        }
    };
    let mut out = Vec::with_capacity(320);
    if protobuf {
        write_protobuf(&fields, &mut out);
    } else {
        write_json(&fields, &mut out);
    }
    // A protobuf payload could start with `{` (0x7b) only with field 15, which
    // these never write; JSON always starts with `{`.
    (reason, out, true)
}

/// A well-formed purchase line, the base every defect edits.
fn purchase(o: &Origin<'_>) -> Vec<(&'static str, Value)> {
    let mut event_id = Vec::with_capacity(24);
    event_id.extend_from_slice(b"x-");
    event_id.extend_from_slice(o.tag);
    event_id.push(b'-');
    wire::hex(o.id, 12, &mut event_id);
    vec![
        (
            "event_id",
            Value::Str(String::from_utf8_lossy(&event_id).into_owned()),
        ),
        ("type", Value::Str("purchase".to_owned())),
        ("stream_id", Value::Str(format!("live-{}", o.stream))),
        ("viewer_id", Value::Str(format!("u-{}", o.viewer))),
        ("ts", Value::Int(o.ts)),
        ("seller_id", Value::Str(format!("shop-{}", o.seller))),
        ("product_id", Value::Str(format!("sku-{}-1", o.stream))),
        (
            "order_id",
            Value::Str(format!("x-{}-{}", String::from_utf8_lossy(o.tag), o.id)),
        ),
        ("quantity", Value::Int(1)),
        ("unit_price", Value::Int(1999)),
        ("currency", Value::Str("USD".to_owned())),
    ]
}

fn set(fields: &mut [(&'static str, Value)], name: &str, value: Value) {
    if let Some(field) = fields.iter_mut().find(|(n, _)| *n == name) {
        field.1 = value;
    }
}

fn unset(fields: &mut Vec<(&'static str, Value)>, name: &str) {
    fields.retain(|(n, _)| *n != name);
}

fn keep_only(fields: &mut Vec<(&'static str, Value)>, names: &[&str]) {
    fields.retain(|(n, _)| names.contains(n));
}

fn write_json(fields: &[(&'static str, Value)], out: &mut Vec<u8>) {
    out.push(b'{');
    for (i, (name, value)) in fields.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.push(b'"');
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(b"\":");
        match value {
            Value::Str(s) => {
                // Generated strings need no escaping.
                out.push(b'"');
                out.extend_from_slice(s.as_bytes());
                out.push(b'"');
            }
            Value::Bytes(b) => {
                out.push(b'"');
                out.extend_from_slice(b);
                out.push(b'"');
            }
            Value::Int(n) => wire::signed(*n, out),
            Value::Json(raw) => out.extend_from_slice(raw.as_bytes()),
        }
    }
    out.push(b'}');
}

/// `livetally.v1.ViewerEvent` field numbers; a string `ts` is `ts_rfc3339`.
fn field_number(name: &str, value: &Value) -> u8 {
    match name {
        "event_id" => 1,
        "type" => 2,
        "stream_id" => 3,
        "viewer_id" => 4,
        "ts" if matches!(value, Value::Str(_)) => 6,
        "ts" => 5,
        "seller_id" => 7,
        "product_id" => 8,
        "order_id" => 9,
        "quantity" => 10,
        "unit_price" => 11,
        _ => 12,
    }
}

fn write_protobuf(fields: &[(&'static str, Value)], out: &mut Vec<u8>) {
    for (name, value) in fields {
        let field = field_number(name, value);
        match value {
            Value::Str(s) if *name == "type" => {
                let ty = livetally_aggregator::EventType::from_wire(s).map_or(99, wire::proto_type);
                wire::key(field, VARINT, out);
                wire::varint(ty, out);
            }
            Value::Str(s) => bytes_field(field, s.as_bytes(), out),
            Value::Bytes(b) => bytes_field(field, b, out),
            Value::Int(n) => {
                wire::key(field, VARINT, out);
                wire::varint(*n as u64, out);
            }
            // JSON-only values are never written to protobuf.
            Value::Json(_) => {}
        }
    }
}

fn bytes_field(field: u8, bytes: &[u8], out: &mut Vec<u8>) {
    wire::key(field, LEN, out);
    wire::varint(bytes.len() as u64, out);
    out.extend_from_slice(bytes);
}
