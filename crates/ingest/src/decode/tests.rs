//! Every rule of spec §1 in both encodings, plus encoding selection.

use std::borrow::Cow;

use livetally_aggregator::{Action, Currency, Event, EventType, InvalidReason, OrderLine};
use livetally_proto::v1::{viewer_event::Ts, ViewerEvent};
use proptest::prelude::*;
use prost::Message;
use serde_json::{json, Map, Value};

use super::*;

const JSON: Option<&[u8]> = Some(b"application/json");
const PROTO: Option<&[u8]> = Some(b"application/x-protobuf");
const TS: i64 = 1_764_120_000_123;

use InvalidReason::{BadTimestamp, BadValue, Malformed, MissingField, TooLarge, UnknownType};

fn cfg() -> DecodeConfig {
    DecodeConfig::default()
}

fn decode_owned(
    payload: &[u8],
    ct: Option<&[u8]>,
    now_ms: Option<i64>,
) -> Result<Event<'static>, InvalidReason> {
    decode(payload, ct, now_ms, &cfg()).map(Event::into_owned)
}

/// Fields each type requires beyond `event_id`, `type`, `stream_id`, `viewer_id`, `ts`.
fn specific_fields(ty: EventType) -> &'static [&'static str] {
    match ty {
        EventType::Impression | EventType::Click | EventType::AddToCart => &["product_id"],
        EventType::Purchase | EventType::Refund => &[
            "product_id",
            "order_id",
            "quantity",
            "unit_price",
            "currency",
        ],
        _ => &[],
    }
}

const COMMON: [&str; 5] = ["event_id", "type", "stream_id", "viewer_id", "ts"];
const ALL_FIELDS: [&str; 11] = [
    "event_id",
    "type",
    "stream_id",
    "viewer_id",
    "ts",
    "seller_id",
    "product_id",
    "order_id",
    "quantity",
    "unit_price",
    "currency",
];

/// A change to one field of a valid record.
#[derive(Clone, Debug)]
enum Set {
    Remove,
    Null,
    Str(String),
    Int(i64),
    /// Only JSON can carry these; protobuf cases skip them.
    JsonOnly(Value),
}

fn s(v: &str) -> Set {
    Set::Str(v.to_owned())
}

/// A valid record of `ty` as a JSON object holding every field of the contract.
fn json_base(ty: EventType) -> Map<String, Value> {
    let Value::Object(map) = json!({
        "event_id": "9f1c2d3e-4b5a-6978-8a9b-0c1d2e3f4a5b", "type": ty.as_str(), "stream_id": "live-42",
        "viewer_id": "u-7", "ts": TS, "seller_id": "shop-3", "product_id": "sku-9", "order_id": "o-55",
        "quantity": 2, "unit_price": 1999, "currency": "USD"
    }) else {
        unreachable!()
    };
    map
}

fn proto_base(ty: EventType) -> ViewerEvent {
    ViewerEvent {
        event_id: Some("9f1c2d3e-4b5a-6978-8a9b-0c1d2e3f4a5b".into()),
        r#type: super::protobuf::to_wire(ty) as i32,
        stream_id: Some("live-42".into()),
        viewer_id: Some("u-7".into()),
        ts: Some(Ts::TsMs(TS)),
        seller_id: Some("shop-3".into()),
        product_id: Some("sku-9".into()),
        order_id: Some("o-55".into()),
        quantity: Some(2),
        unit_price: Some(1999),
        currency: Some("USD".into()),
    }
}

fn json_apply(map: &mut Map<String, Value>, field: &str, set: &Set) {
    let value = match set {
        Set::Remove => {
            map.remove(field);
            return;
        }
        Set::Null => Value::Null,
        Set::Str(v) => Value::from(v.as_str()),
        Set::Int(n) => Value::from(*n),
        Set::JsonOnly(v) => v.clone(),
    };
    map.insert(field.to_owned(), value);
}

/// Applies `set` to a protobuf record; `false` when protobuf cannot say it.
fn proto_apply(ev: &mut ViewerEvent, field: &str, set: &Set) -> bool {
    let string = |set: &Set| match set {
        Set::Remove | Set::Null => Some(None),
        Set::Str(v) => Some(Some(v.clone())),
        _ => None,
    };
    let int = |set: &Set| match set {
        Set::Remove | Set::Null => Some(None),
        Set::Int(n) => Some(Some(*n)),
        _ => None,
    };
    let slot = match field {
        "event_id" => &mut ev.event_id,
        "stream_id" => &mut ev.stream_id,
        "viewer_id" => &mut ev.viewer_id,
        "seller_id" => &mut ev.seller_id,
        "product_id" => &mut ev.product_id,
        "order_id" => &mut ev.order_id,
        "currency" => &mut ev.currency,
        "quantity" | "unit_price" => {
            let Some(v) = int(set) else { return false };
            *if field == "quantity" {
                &mut ev.quantity
            } else {
                &mut ev.unit_price
            } = v;
            return true;
        }
        "type" => {
            ev.r#type = match set {
                Set::Remove | Set::Null => 0,
                Set::Int(n) => match i32::try_from(*n) {
                    Ok(n) => n,
                    Err(_) => return false,
                },
                Set::Str(name) => match EventType::from_wire(name) {
                    Some(ty) => super::protobuf::to_wire(ty) as i32,
                    None => return false,
                },
                Set::JsonOnly(_) => return false,
            };
            return true;
        }
        "ts" => {
            ev.ts = match set {
                Set::Remove | Set::Null => None,
                Set::Int(n) => Some(Ts::TsMs(*n)),
                Set::Str(v) => Some(Ts::TsRfc3339(v.clone())),
                Set::JsonOnly(_) => return false,
            };
            return true;
        }
        other => panic!("unknown field {other}"),
    };
    match string(set) {
        Some(v) => {
            *slot = v;
            true
        }
        None => false,
    }
}

/// Decodes a changed valid record of `ty` in both encodings (protobuf only
/// where it can carry the change) and checks the outcome.
fn check(
    ty: EventType,
    changes: &[(&str, Set)],
    now_ms: Option<i64>,
    expected: Result<(), InvalidReason>,
) {
    let mut map = json_base(ty);
    let mut proto = proto_base(ty);
    let mut proto_ok = true;
    for (field, set) in changes {
        json_apply(&mut map, field, set);
        proto_ok &= proto_apply(&mut proto, field, set);
    }
    let bytes = serde_json::to_vec(&map).unwrap();
    let got = decode(&bytes, JSON, now_ms, &cfg()).map(|_| ());
    assert_eq!(
        got,
        expected,
        "json {ty:?} {changes:?}: {}",
        String::from_utf8_lossy(&bytes)
    );
    if proto_ok {
        let bytes = proto.encode_to_vec();
        let got = decode(&bytes, PROTO, now_ms, &cfg()).map(|_| ());
        assert_eq!(got, expected, "protobuf {ty:?} {changes:?}: {proto:?}");
    }
}

fn check_purchase_and_refund(changes: &[(&str, Set)], expected: Result<(), InvalidReason>) {
    check(EventType::Purchase, changes, None, expected);
    check(EventType::Refund, changes, None, expected);
}

// ---- valid events ----

fn expected_event(ty: EventType) -> Event<'static> {
    let product_id = Cow::Borrowed("sku-9");
    let line = OrderLine {
        product_id: product_id.clone(),
        order_id: Cow::Borrowed("o-55"),
        quantity: 2,
        unit_price: 1999,
        currency: Currency(*b"USD"),
    };
    Event {
        event_id: Cow::Borrowed("9f1c2d3e-4b5a-6978-8a9b-0c1d2e3f4a5b"),
        stream_id: Cow::Borrowed("live-42"),
        viewer_id: Cow::Borrowed("u-7"),
        ts: TS,
        seller_id: Some(Cow::Borrowed("shop-3")),
        action: match ty {
            EventType::View => Action::View,
            EventType::Leave => Action::Leave,
            EventType::Impression => Action::Impression { product_id },
            EventType::Click => Action::Click { product_id },
            EventType::AddToCart => Action::AddToCart { product_id },
            EventType::Purchase => Action::Purchase(line),
            EventType::Refund => Action::Refund(line),
            EventType::Like => Action::Like,
            EventType::Comment => Action::Comment,
            EventType::Share => Action::Share,
            EventType::Follow => Action::Follow,
        },
    }
}

#[test]
fn valid_event_of_every_type_in_both_encodings() {
    for ty in EventType::ALL {
        let json = serde_json::to_vec(&json_base(ty)).unwrap();
        assert_eq!(
            decode_owned(&json, JSON, None),
            Ok(expected_event(ty)),
            "{ty:?}"
        );
        let proto = proto_base(ty).encode_to_vec();
        assert_eq!(
            decode_owned(&proto, PROTO, None),
            Ok(expected_event(ty)),
            "{ty:?}"
        );
    }
}

#[test]
fn minimal_event_of_every_type_needs_only_its_fields() {
    for ty in EventType::ALL {
        let mut changes = vec![("seller_id", Set::Remove)];
        for field in ALL_FIELDS {
            if !COMMON.contains(&field)
                && !specific_fields(ty).contains(&field)
                && field != "seller_id"
            {
                changes.push((field, Set::Remove));
            }
        }
        check(ty, &changes, None, Ok(()));
    }
}

#[test]
fn spec_example_purchase() {
    let payload = br#"{"event_id":"9f1c","type":"purchase","stream_id":"live-42","viewer_id":"u-7",
 "ts":1764120000123,"seller_id":"shop-3","product_id":"sku-9","order_id":"o-55",
 "quantity":2,"unit_price":1999,"currency":"USD"}"#;
    let event = decode(payload, None, None, &cfg()).unwrap();
    let Action::Purchase(line) = &event.action else {
        panic!("{event:?}")
    };
    assert_eq!(
        (event.ts, line.quantity, line.unit_price, line.amount()),
        (TS, 2, 1999, 3998)
    );
    assert_eq!(line.currency, Currency(*b"USD"));
}

#[test]
fn fields_the_type_lacks_are_ignored_unread() {
    let junk = [
        Set::Str(String::new()),
        Set::Int(-5),
        s("usd"),
        Set::JsonOnly(json!([1, 2])),
        Set::JsonOnly(json!({"a": 1})),
        Set::JsonOnly(json!(1.5)),
    ];
    for ty in EventType::ALL {
        for field in [
            "product_id",
            "order_id",
            "quantity",
            "unit_price",
            "currency",
        ] {
            if specific_fields(ty).contains(&field) {
                continue;
            }
            for set in &junk {
                check(ty, &[(field, set.clone())], None, Ok(()));
            }
        }
    }
}

#[test]
fn unknown_extra_fields_are_ignored() {
    let payload = br#"{"extra":{"nested":[1,{"x":null},"s\"q"]},"type":"view","event_id":"e","n":-1.5e300,
        "stream_id":"s","big":123456789012345678901234567890,"viewer_id":"v","ts":5,"flag":true,"z":null}"#;
    let event = decode(payload, JSON, None, &cfg()).unwrap();
    assert_eq!(
        (event.event_id.as_ref(), event.ts, event.action),
        ("e", 5, Action::View)
    );
}

#[test]
fn rfc3339_timestamps() {
    let cases = [
        ("2025-11-26T01:20:00.123+01:00", 1_764_116_400_123),
        ("2025-11-26T00:20:00.123Z", 1_764_116_400_123),
        ("2025-11-26T01:20:00Z", 1_764_120_000_000),
        ("2025-11-26t01:20:00z", 1_764_120_000_000),
        ("2025-11-26T01:20:00.123999999Z", 1_764_120_000_123),
        ("2025-11-25T20:20:00-05:00", 1_764_120_000_000),
        ("1970-01-01T00:00:00Z", 0),
        ("9999-12-31T23:59:59.999Z", MAX_TS_MS),
    ];
    for (text, ms) in cases {
        check(EventType::View, &[("ts", s(text))], None, Ok(()));
        let mut map = json_base(EventType::View);
        map.insert("ts".into(), text.into());
        let event = decode_owned(&serde_json::to_vec(&map).unwrap(), JSON, None).unwrap();
        assert_eq!(event.ts, ms, "{text}");
        let mut proto = proto_base(EventType::View);
        proto.ts = Some(Ts::TsRfc3339(text.into()));
        assert_eq!(
            decode_owned(&proto.encode_to_vec(), PROTO, None)
                .unwrap()
                .ts,
            ms,
            "{text}"
        );
    }
}

#[test]
fn integer_timestamp_bounds() {
    check(EventType::Like, &[("ts", Set::Int(0))], None, Ok(()));
    check(
        EventType::Like,
        &[("ts", Set::Int(MAX_TS_MS))],
        None,
        Ok(()),
    );
    check(
        EventType::Like,
        &[("ts", Set::Int(MAX_TS_MS + 1))],
        None,
        Err(BadTimestamp),
    );
}

// ---- missing_field ----

#[test]
fn missing_required_field_of_every_type() {
    for ty in EventType::ALL {
        for field in COMMON.iter().chain(specific_fields(ty)) {
            check(ty, &[(field, Set::Remove)], None, Err(MissingField));
            check(ty, &[(field, Set::Null)], None, Err(MissingField));
        }
    }
}

#[test]
fn seller_id_is_optional() {
    for ty in EventType::ALL {
        check(ty, &[("seller_id", Set::Remove)], None, Ok(()));
        check(ty, &[("seller_id", Set::Null)], None, Ok(()));
        check(ty, &[("seller_id", s(""))], None, Ok(()));
    }
    let mut map = json_base(EventType::View);
    map.insert("seller_id".into(), "".into());
    assert_eq!(
        decode_owned(&serde_json::to_vec(&map).unwrap(), JSON, None)
            .unwrap()
            .seller_id,
        None
    );
}

// ---- unknown_type ----

#[test]
fn unknown_type() {
    for name in ["purchased", "VIEW", "View", "", "add-to-cart", " view"] {
        check(
            EventType::View,
            &[("type", s(name))],
            None,
            Err(UnknownType),
        );
    }
    for value in [
        json!(6),
        json!(true),
        json!(["view"]),
        json!({"name": "view"}),
        json!(1.0),
    ] {
        check(
            EventType::View,
            &[("type", Set::JsonOnly(value))],
            None,
            Err(UnknownType),
        );
    }
    for number in [12, -1, 999, i64::from(i32::MAX)] {
        let mut proto = proto_base(EventType::View);
        proto.r#type = i32::try_from(number).unwrap();
        assert_eq!(
            decode_owned(&proto.encode_to_vec(), PROTO, None),
            Err(UnknownType),
            "{number}"
        );
    }
}

#[test]
fn every_wire_name_and_number_is_known() {
    for ty in EventType::ALL {
        check(ty, &[("type", s(ty.as_str()))], None, Ok(()));
        let mut proto = proto_base(ty);
        proto.r#type = super::protobuf::to_wire(ty) as i32;
        assert!((1..=11).contains(&proto.r#type));
        assert_eq!(
            decode_owned(&proto.encode_to_vec(), PROTO, None),
            Ok(expected_event(ty))
        );
    }
}

// ---- bad_value ----

#[test]
fn bad_quantity() {
    for q in [
        0,
        -1,
        -2,
        i64::from(MAX_QUANTITY) + 1,
        i64::from(u32::MAX) + 1,
        i64::MAX,
        i64::MIN,
    ] {
        check_purchase_and_refund(&[("quantity", Set::Int(q))], Err(BadValue));
    }
    for value in [
        json!("2"),
        json!(1.5),
        json!(2.0),
        json!(2e0),
        json!(true),
        json!([2]),
        json!(u64::MAX),
    ] {
        check_purchase_and_refund(&[("quantity", Set::JsonOnly(value))], Err(BadValue));
    }
    check_purchase_and_refund(&[("quantity", Set::Int(1))], Ok(()));
    check_purchase_and_refund(&[("quantity", Set::Int(MAX_QUANTITY.into()))], Ok(()));
}

#[test]
fn bad_unit_price() {
    for p in [-1, -1999, MAX_UNIT_PRICE + 1, i64::MAX] {
        check_purchase_and_refund(&[("unit_price", Set::Int(p))], Err(BadValue));
    }
    for value in [json!("1999"), json!(19.99), json!(false)] {
        check_purchase_and_refund(&[("unit_price", Set::JsonOnly(value))], Err(BadValue));
    }
    check_purchase_and_refund(&[("unit_price", Set::Int(0))], Ok(()));
    check_purchase_and_refund(&[("unit_price", Set::Int(MAX_UNIT_PRICE))], Ok(()));
    check_purchase_and_refund(
        &[
            ("quantity", Set::Int(MAX_QUANTITY.into())),
            ("unit_price", Set::Int(MAX_UNIT_PRICE)),
        ],
        Ok(()),
    );
}

#[test]
fn bad_currency() {
    for code in [
        "usd", "Usd", "US", "U", "", "USDD", "ABC", "ZWL", "HRK", "US1", "ÜSD", " USD",
    ] {
        check_purchase_and_refund(&[("currency", s(code))], Err(BadValue));
    }
    check_purchase_and_refund(&[("currency", Set::JsonOnly(json!(840)))], Err(BadValue));
    for code in [
        "EUR", "JPY", "XTS", "XXX", "XAU", "ZWG", "XCG", "VES", "SLE", "STN", "MRU", "CHE",
    ] {
        check_purchase_and_refund(&[("currency", s(code))], Ok(()));
    }
}

#[test]
fn id_length_is_counted_in_bytes() {
    let ids = [
        "event_id",
        "stream_id",
        "viewer_id",
        "product_id",
        "order_id",
    ];
    for ty in [EventType::Purchase, EventType::Refund] {
        for field in ids.into_iter().chain(["seller_id"]) {
            check(ty, &[(field, s(&"a".repeat(128)))], None, Ok(()));
            check(ty, &[(field, s(&"é".repeat(64)))], None, Ok(()));
            check(ty, &[(field, s(&"a".repeat(129)))], None, Err(BadValue));
            check(
                ty,
                &[(field, s(&format!("{}a", "é".repeat(64))))],
                None,
                Err(BadValue),
            );
            check(
                ty,
                &[(field, Set::JsonOnly(json!(42)))],
                None,
                Err(BadValue),
            );
            check(
                ty,
                &[(field, Set::JsonOnly(json!(["a"])))],
                None,
                Err(BadValue),
            );
        }
        for field in ids {
            check(ty, &[(field, s(""))], None, Err(BadValue));
        }
    }
    for ty in [
        EventType::Impression,
        EventType::Click,
        EventType::AddToCart,
    ] {
        check(ty, &[("product_id", s(""))], None, Err(BadValue));
        check(
            ty,
            &[("product_id", s(&"p".repeat(129)))],
            None,
            Err(BadValue),
        );
    }
}

// ---- bad_timestamp ----

#[test]
fn bad_timestamp_values() {
    for text in [
        "yesterday",
        "",
        "1764120000123",
        "2025-11-26",
        "2025-11-26T01:20:00",
        "2025-13-26T01:20:00Z",
        "2025-11-26T01:20:00+25:00",
        "1969-12-31T23:59:59Z",
        "1969-12-31T23:59:59.9999Z",
        "10000-01-01T00:00:00Z",
    ] {
        check(EventType::View, &[("ts", s(text))], None, Err(BadTimestamp));
    }
    for ms in [-1, i64::MIN] {
        check(
            EventType::View,
            &[("ts", Set::Int(ms))],
            None,
            Err(BadTimestamp),
        );
    }
    for value in [
        json!(1.5),
        json!(1764120000123.0),
        json!(1.764e12),
        json!(true),
        json!([TS]),
        json!({"ms": TS}),
    ] {
        check(
            EventType::View,
            &[("ts", Set::JsonOnly(value))],
            None,
            Err(BadTimestamp),
        );
    }
}

#[test]
fn clock_guard_only_when_live() {
    let now = 1_764_120_000_000;
    let skew = cfg().max_future_skew_ms;
    for ty in [EventType::View, EventType::Purchase] {
        check(ty, &[("ts", Set::Int(now + skew))], Some(now), Ok(()));
        check(
            ty,
            &[("ts", Set::Int(now + skew + 1))],
            Some(now),
            Err(BadTimestamp),
        );
        check(ty, &[("ts", Set::Int(now + skew + 1))], None, Ok(()));
        check(ty, &[("ts", Set::Int(0))], Some(now), Ok(()));
        // 2025-11-26T01:25:00.001Z is 5 min 1 ms ahead of `now`.
        check(
            ty,
            &[("ts", s("2025-11-26T01:25:00.001Z"))],
            Some(now),
            Err(BadTimestamp),
        );
        check(
            ty,
            &[("ts", s("2025-11-26T02:25:00+01:00"))],
            Some(now),
            Ok(()),
        );
        check(ty, &[("ts", s("2025-11-26T01:25:00.001Z"))], None, Ok(()));
    }
    let tight = DecodeConfig {
        max_future_skew_ms: 0,
        ..cfg()
    };
    let payload = serde_json::to_vec(&json_base(EventType::View)).unwrap();
    assert_eq!(
        decode(&payload, JSON, Some(TS - 1), &tight).map(|_| ()),
        Err(BadTimestamp)
    );
    assert_eq!(decode(&payload, JSON, Some(TS), &tight).map(|_| ()), Ok(()));
    assert_eq!(
        decode(&payload, JSON, Some(i64::MAX), &cfg()).map(|_| ()),
        Ok(())
    );
}

// ---- precedence ----

#[test]
fn first_failing_field_in_table_order_wins() {
    let p = EventType::Purchase;
    // `type` before everything.
    check(
        p,
        &[("event_id", Set::Remove), ("type", s("nope"))],
        None,
        Err(UnknownType),
    );
    check(
        p,
        &[("ts", s("bad")), ("type", Set::Remove)],
        None,
        Err(MissingField),
    );
    // Then table order, whatever the reason.
    check(
        p,
        &[("event_id", Set::Remove), ("quantity", Set::Int(0))],
        None,
        Err(MissingField),
    );
    check(
        p,
        &[("event_id", s("")), ("stream_id", Set::Remove)],
        None,
        Err(BadValue),
    );
    check(
        p,
        &[("viewer_id", Set::Remove), ("ts", Set::Int(-1))],
        None,
        Err(MissingField),
    );
    check(
        p,
        &[("ts", Set::Int(-1)), ("quantity", Set::Int(0))],
        None,
        Err(BadTimestamp),
    );
    check(
        p,
        &[("ts", Set::Remove), ("seller_id", Set::Int(1))],
        None,
        Err(MissingField),
    );
    check(
        p,
        &[
            ("seller_id", s(&"s".repeat(129))),
            ("product_id", Set::Remove),
        ],
        None,
        Err(BadValue),
    );
    check(
        p,
        &[("quantity", Set::Int(0)), ("currency", Set::Remove)],
        None,
        Err(BadValue),
    );
    check(
        p,
        &[("unit_price", Set::Remove), ("currency", s("usd"))],
        None,
        Err(MissingField),
    );
    // A bad `seller_id` counts for every type.
    check(
        EventType::View,
        &[("seller_id", s(&"s".repeat(129)))],
        None,
        Err(BadValue),
    );
    check(
        EventType::Follow,
        &[("seller_id", Set::JsonOnly(json!(7)))],
        None,
        Err(BadValue),
    );
}

#[test]
fn duplicate_keys_keep_the_last_value() {
    let payload = br#"{"event_id":"e","type":"purchase","stream_id":"s","viewer_id":"v","ts":1,
        "product_id":"p","order_id":"o","quantity":0,"unit_price":5,"currency":"usd","quantity":3,"currency":"EUR"}"#;
    let event = decode(payload, JSON, None, &cfg()).unwrap();
    let Action::Purchase(line) = event.action else {
        panic!()
    };
    assert_eq!((line.quantity, line.currency), (3, Currency(*b"EUR")));
    let payload =
        br#"{"event_id":"e","type":"view","stream_id":"s","viewer_id":"v","ts":1,"ts":null}"#;
    assert_eq!(decode(payload, JSON, None, &cfg()), Err(MissingField));
}

// ---- malformed ----

#[test]
fn malformed_json() {
    let cases: [&[u8]; 16] = [
        b"",
        b"   ",
        b"not json",
        b"{",
        br#"{"event_id":"e","type":"view""#,
        br#"{"event_id":"e","type":"view","stream_id":"s","viewer_id":"v","ts":1} x"#,
        br#"{"event_id":"e","type":"view","stream_id":"s","viewer_id":"v","ts":1}{}"#,
        br#"[{"event_id":"e"}]"#,
        b"null",
        b"42",
        br#""view""#,
        b"{\"event_id\":\"\xff\",\"type\":\"view\"}",
        b"{\"extra\":\"\xc3\x28\",\"event_id\":\"e\",\"type\":\"view\",\"stream_id\":\"s\",\"viewer_id\":\"v\",\"ts\":1}",
        b"\xef\xbb\xbf{}",
        br#"{"event_id":"\ud800","type":"view"}"#,
        br#"{"event_id":'e'}"#,
    ];
    for payload in cases {
        assert_eq!(
            decode(payload, JSON, None, &cfg()),
            Err(Malformed),
            "{}",
            String::from_utf8_lossy(payload)
        );
    }
    // An empty object is well-formed, just incomplete.
    assert_eq!(decode(b"{}", JSON, None, &cfg()), Err(MissingField));
    assert_eq!(decode(b" {} \n", JSON, None, &cfg()), Err(MissingField));
}

#[test]
fn malformed_protobuf() {
    let valid = proto_base(EventType::Purchase).encode_to_vec();
    let mut bad_utf8 = proto_base(EventType::Purchase);
    bad_utf8.event_id = Some("x".repeat(5));
    let mut bad_utf8 = bad_utf8.encode_to_vec();
    let at = bad_utf8.windows(5).position(|w| w == b"xxxxx").unwrap();
    bad_utf8[at + 2] = 0xff;
    let cases: Vec<Vec<u8>> = vec![
        vec![],
        vec![0xff; 12],
        vec![0x0a, 0x10, b'a'],            // string longer than the record
        valid[..valid.len() - 2].to_vec(), // truncated
        bad_utf8,
        vec![0x12, 0x01, 0x01], // `type` with the wrong wire type
        vec![
            0x08, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01,
        ], // varint too long
        vec![0x07],             // wire type 7
        vec![0x00, 0x01],       // field 0
    ];
    for payload in cases {
        assert_eq!(
            decode(&payload, PROTO, None, &cfg()),
            Err(Malformed),
            "{payload:x?}"
        );
        if !payload.is_empty() {
            assert_eq!(
                decode(&payload, None, None, &cfg()),
                Err(Malformed),
                "{payload:x?}"
            );
        }
    }
}

#[test]
fn protobuf_unknown_fields_are_skipped() {
    let mut payload = proto_base(EventType::Click).encode_to_vec();
    payload.extend_from_slice(&[0xa0, 0x06, 0x2a]); // field 100 varint 42
    payload.extend_from_slice(&[0xaa, 0x06, 0x03, b'a', b'b', b'c']); // field 101 bytes
    assert_eq!(
        decode_owned(&payload, PROTO, None),
        Ok(expected_event(EventType::Click))
    );
}

// ---- too_large ----

#[test]
fn too_large_comes_first() {
    let config = cfg();
    let mut map = json_base(EventType::View);
    let base_len = serde_json::to_vec(&map).unwrap().len();
    let pad = config.max_event_bytes - base_len - r#","pad":"""#.len();
    map.insert("pad".into(), "p".repeat(pad).into());
    let exact = serde_json::to_vec(&map).unwrap();
    assert_eq!(exact.len(), config.max_event_bytes);
    assert!(decode(&exact, JSON, None, &config).is_ok());
    map.insert("pad".into(), "p".repeat(pad + 1).into());
    let over = serde_json::to_vec(&map).unwrap();
    assert_eq!(decode(&over, JSON, None, &config), Err(TooLarge));
    assert_eq!(
        decode(&vec![0xff; config.max_event_bytes + 1], None, None, &config),
        Err(TooLarge)
    );

    let small = DecodeConfig {
        max_event_bytes: 16,
        ..cfg()
    };
    let proto = proto_base(EventType::View).encode_to_vec();
    assert_eq!(decode(&proto, PROTO, None, &small), Err(TooLarge));
    assert_eq!(decode(&proto[..16], PROTO, None, &small), Err(Malformed));
}

// ---- strings ----

#[test]
fn escapes_are_decoded_and_plain_strings_borrowed() {
    let payload =
        br#"{"event_id":"e\"1\\","type":"cli\u0063k","stream_id":"live-42","viewer_id":"u\n7",
        "ts":1,"product_id":"sku-\u00e9","seller_id":"\ud83d\ude00","event\u005fid":"e-\t2"}"#;
    let event = decode(payload, JSON, None, &cfg()).unwrap();
    assert_eq!(event.event_id, "e-\t2");
    assert_eq!(event.viewer_id, "u\n7");
    assert_eq!(event.seller_id.as_deref(), Some("😀"));
    assert_eq!(
        event.action,
        Action::Click {
            product_id: Cow::Borrowed("sku-é")
        }
    );
    assert!(matches!(event.stream_id, Cow::Borrowed(_)));
    assert!(matches!(event.viewer_id, Cow::Owned(_)));
    let Action::Click { product_id } = &event.action else {
        unreachable!()
    };
    assert!(matches!(product_id, Cow::Owned(_)));

    let raw_utf8 = "{\"event_id\":\"é-😀\",\"type\":\"view\",\"stream_id\":\"s\",\"viewer_id\":\"v\",\"ts\":1}";
    let event = decode(raw_utf8.as_bytes(), None, None, &cfg()).unwrap();
    assert!(matches!(event.event_id, Cow::Borrowed("é-😀")));
}

#[test]
fn no_allocation_for_plain_json() {
    let purchase = serde_json::to_vec(&json_base(EventType::Purchase)).unwrap();
    let (result, allocations) =
        alloc_count::during(|| decode(&purchase, JSON, Some(TS), &cfg()).map(|_| ()));
    assert_eq!((result, allocations), (Ok(()), 0));
    let mut rfc = json_base(EventType::AddToCart);
    rfc.insert("ts".into(), "2025-11-26T01:20:00.123+01:00".into());
    let rfc = serde_json::to_vec(&rfc).unwrap();
    let (result, allocations) =
        alloc_count::during(|| decode(&rfc, None, None, &cfg()).map(|_| ()));
    assert_eq!((result, allocations), (Ok(()), 0));
}

// ---- encoding selection ----

#[test]
fn content_type_header() {
    let json = [
        &b"application/json"[..],
        b"Application/JSON",
        b"application/json; charset=utf-8",
        b" application/json ;charset=UTF-8",
    ];
    for ct in json {
        assert_eq!(
            Encoding::from_content_type(ct),
            Some(Encoding::Json),
            "{ct:?}"
        );
    }
    let proto = [
        &b"application/x-protobuf"[..],
        b"APPLICATION/X-PROTOBUF",
        b"application/x-protobuf; messageType=livetally.v1.ViewerEvent",
        b"application/protobuf",
        b"application/vnd.google.protobuf",
    ];
    for ct in proto {
        assert_eq!(
            Encoding::from_content_type(ct),
            Some(Encoding::Protobuf),
            "{ct:?}"
        );
    }
    for ct in [
        &b""[..],
        b"text/plain",
        b"application/jsonx",
        b"json",
        b"\xff\xfe",
        b";application/json",
    ] {
        assert_eq!(Encoding::from_content_type(ct), None, "{ct:?}");
    }
    for enc in [Encoding::Json, Encoding::Protobuf] {
        assert_eq!(
            Encoding::from_content_type(enc.content_type().as_bytes()),
            Some(enc)
        );
    }
}

#[test]
fn sniffing() {
    assert_eq!(Encoding::sniff(b"{}"), Encoding::Json);
    assert_eq!(Encoding::sniff(b" \t\r\n{"), Encoding::Json);
    assert_eq!(Encoding::sniff(b"\x0a\x03abc"), Encoding::Protobuf);
    assert_eq!(Encoding::sniff(b"[{}]"), Encoding::Protobuf);
    assert_eq!(Encoding::sniff(b""), Encoding::Protobuf);
}

#[test]
fn sniffed_protobuf_that_looks_like_json() {
    // Field 1 (0x0a, a newline) of length 9 (a tab) starting with `{`.
    for event_id in [
        "{abcdefgh",
        "{abcdefghi",
        "{abcdefghijkl",
        "{".repeat(32).as_str(),
    ] {
        let mut proto = proto_base(EventType::View);
        proto.event_id = Some(event_id.into());
        let payload = proto.encode_to_vec();
        assert_eq!(Encoding::sniff(&payload), Encoding::Json, "{payload:x?}");
        let event = decode(&payload, None, None, &cfg()).unwrap();
        assert_eq!(event.event_id, event_id);
        assert_eq!(decode(&payload, JSON, None, &cfg()), Err(Malformed));
    }
    // Broken JSON stays malformed either way.
    assert_eq!(decode(b" \n{\"type\":", None, None, &cfg()), Err(Malformed));
    assert_eq!(decode(b"{\"type\":", None, None, &cfg()), Err(Malformed));
}

#[test]
fn header_decides_and_unknown_header_sniffs() {
    let json = serde_json::to_vec(&json_base(EventType::Share)).unwrap();
    let proto = proto_base(EventType::Share).encode_to_vec();
    let expected = Ok(expected_event(EventType::Share));
    for ct in [None, Some(&b"text/plain"[..]), Some(b"")] {
        assert_eq!(decode_owned(&json, ct, None), expected);
        assert_eq!(decode_owned(&proto, ct, None), expected);
    }
    assert_eq!(decode_owned(&json, JSON, None), expected);
    assert_eq!(decode_owned(&proto, PROTO, None), expected);
    // The header wins over the bytes.
    assert_eq!(decode(&proto, JSON, None, &cfg()), Err(Malformed));
    assert!(decode(&json, PROTO, None, &cfg()).is_err());
}

proptest! {
    #[test]
    fn arbitrary_bytes_never_panic(payload in proptest::collection::vec(any::<u8>(), 0..300), now in proptest::option::of(any::<i64>())) {
        for ct in [JSON, PROTO, None] {
            let _ = decode(&payload, ct, now, &cfg());
        }
    }

    #[test]
    fn mutated_valid_records_never_panic(
        ty in proptest::sample::select(EventType::ALL.to_vec()),
        flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..4),
    ) {
        let mut json = serde_json::to_vec(&json_base(ty)).unwrap();
        let mut proto = proto_base(ty).encode_to_vec();
        for (at, byte) in flips {
            let j = at.index(json.len());
            json[j] = byte;
            let p = at.index(proto.len());
            proto[p] = byte;
        }
        let _ = decode(&json, JSON, None, &cfg());
        let _ = decode(&proto, PROTO, None, &cfg());
    }
}

/// Counts heap allocations made by the current thread.
mod alloc_count {
    use std::alloc::{GlobalAlloc, Layout, System};
    use std::cell::Cell;

    thread_local! {
        static ALLOCATIONS: Cell<u64> = const { Cell::new(0) };
    }

    struct Counting;

    // SAFETY: forwards every call to the system allocator unchanged; only
    // counts, in a const-initialised thread-local that itself never allocates.
    unsafe impl GlobalAlloc for Counting {
        unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
            let _ = ALLOCATIONS.try_with(|n| n.set(n.get() + 1));
            // SAFETY: the caller upholds `GlobalAlloc::alloc`'s contract.
            unsafe { System.alloc(layout) }
        }

        unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
            // SAFETY: `ptr` came from `System.alloc` with this `layout`.
            unsafe { System.dealloc(ptr, layout) }
        }
    }

    #[global_allocator]
    static GLOBAL: Counting = Counting;

    /// Runs `f` and returns its result with the allocations it made.
    pub(super) fn during<R>(f: impl FnOnce() -> R) -> (R, u64) {
        let before = ALLOCATIONS.with(Cell::get);
        let result = f();
        (result, ALLOCATIONS.with(Cell::get) - before)
    }
}
