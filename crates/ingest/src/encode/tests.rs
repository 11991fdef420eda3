//! The encoders' shape, and `decode(encode(e)) == e` for both encodings.

use std::borrow::Cow;

use livetally_aggregator::{Action, Currency, Event, EventType, OrderLine};
use livetally_proto::v1::{viewer_event::Ts, ViewerEvent};
use proptest::prelude::*;
use prost::Message;

use super::*;
use crate::decode::{
    decode, DecodeConfig, Encoding, ISO_4217, MAX_QUANTITY, MAX_TS_MS, MAX_UNIT_PRICE,
};

fn purchase() -> Event<'static> {
    Event {
        event_id: "9f1c".into(),
        stream_id: "live-42".into(),
        viewer_id: "u-7".into(),
        ts: 1_764_120_000_123,
        seller_id: Some("shop-3".into()),
        action: Action::Purchase(OrderLine {
            product_id: "sku-9".into(),
            order_id: "o-55".into(),
            quantity: 2,
            unit_price: 1999,
            currency: Currency(*b"USD"),
        }),
    }
}

#[test]
fn json_shape_is_the_contracts() {
    let expected = r#"{"event_id":"9f1c","type":"purchase","stream_id":"live-42","viewer_id":"u-7","ts":1764120000123,"seller_id":"shop-3","product_id":"sku-9","order_id":"o-55","quantity":2,"unit_price":1999,"currency":"USD"}"#;
    assert_eq!(String::from_utf8(to_json(&purchase())).unwrap(), expected);

    let view = Event {
        seller_id: None,
        action: Action::View,
        ..purchase()
    };
    let expected = r#"{"event_id":"9f1c","type":"view","stream_id":"live-42","viewer_id":"u-7","ts":1764120000123}"#;
    assert_eq!(String::from_utf8(to_json(&view)).unwrap(), expected);

    let click = Event {
        action: Action::AddToCart {
            product_id: "p".into(),
        },
        ..purchase()
    };
    let value: serde_json::Value = serde_json::from_slice(&to_json(&click)).unwrap();
    assert_eq!(value["type"], "add_to_cart");
    assert_eq!(value["product_id"], "p");
    assert!(value.get("order_id").is_none() && value.get("quantity").is_none());
}

#[test]
fn json_strings_are_escaped() {
    let tricky = "q\"b\\s/\n\r\t\u{8}\u{c}\u{0}\u{1f}\u{7f}é😀\u{2028}";
    let event = Event {
        event_id: tricky.into(),
        action: Action::Like,
        ..purchase()
    };
    let json = to_json(&event);
    let value: serde_json::Value = serde_json::from_slice(&json).unwrap();
    assert_eq!(value["event_id"], tricky);
    assert!(String::from_utf8(json)
        .unwrap()
        .contains(r#""q\"b\\s/\n\r\t\b\f\u0000\u001f"#));
}

#[test]
fn json_integers() {
    for n in [0, 1, 9, 10, 1999, i64::MAX, -1, i64::MIN] {
        let mut out = Vec::new();
        json_int(&mut out, n);
        assert_eq!(String::from_utf8(out).unwrap(), n.to_string());
    }
}

#[test]
fn protobuf_matches_prost() {
    let ours = to_protobuf(&purchase());
    let prost = ViewerEvent {
        event_id: Some("9f1c".into()),
        r#type: livetally_proto::v1::EventType::Purchase as i32,
        stream_id: Some("live-42".into()),
        viewer_id: Some("u-7".into()),
        ts: Some(Ts::TsMs(1_764_120_000_123)),
        seller_id: Some("shop-3".into()),
        product_id: Some("sku-9".into()),
        order_id: Some("o-55".into()),
        quantity: Some(2),
        unit_price: Some(1999),
        currency: Some("USD".into()),
    };
    assert_eq!(ViewerEvent::decode(&ours[..]).unwrap(), prost);
    assert_eq!(ours, prost.encode_to_vec());

    let view = Event {
        seller_id: None,
        action: Action::View,
        ..purchase()
    };
    let decoded = ViewerEvent::decode(&to_protobuf(&view)[..]).unwrap();
    assert_eq!(
        (decoded.seller_id, decoded.product_id, decoded.quantity),
        (None, None, None)
    );
}

fn id() -> impl Strategy<Value = String> {
    // Any characters, control and non-ASCII included, 1..=128 bytes (32 chars
    // of at most 4 bytes); the leading choice makes some ids exactly 128 bytes.
    prop_oneof![
        "(?s).{1,32}",
        "[a-z0-9-]{1,40}",
        Just("x".repeat(128)),
        Just("é".repeat(64)),
    ]
}

fn order_line() -> impl Strategy<Value = OrderLine<'static>> {
    (
        id(),
        id(),
        1..=MAX_QUANTITY,
        0..=MAX_UNIT_PRICE,
        proptest::sample::select(ISO_4217),
    )
        .prop_map(
            |(product_id, order_id, quantity, unit_price, code)| OrderLine {
                product_id: Cow::Owned(product_id),
                order_id: Cow::Owned(order_id),
                quantity,
                unit_price,
                currency: Currency(code.as_bytes().try_into().unwrap()),
            },
        )
}

fn action() -> impl Strategy<Value = Action<'static>> {
    let product = || id().prop_map(Cow::Owned);
    prop_oneof![
        Just(Action::View),
        Just(Action::Leave),
        product().prop_map(|product_id| Action::Impression { product_id }),
        product().prop_map(|product_id| Action::Click { product_id }),
        product().prop_map(|product_id| Action::AddToCart { product_id }),
        order_line().prop_map(Action::Purchase),
        order_line().prop_map(Action::Refund),
        Just(Action::Like),
        Just(Action::Comment),
        Just(Action::Share),
        Just(Action::Follow),
    ]
}

fn event() -> impl Strategy<Value = Event<'static>> {
    (
        id(),
        id(),
        id(),
        prop_oneof![0..=MAX_TS_MS, 1_700_000_000_000..=1_800_000_000_000i64],
        proptest::option::of(id()),
        action(),
    )
        .prop_map(
            |(event_id, stream_id, viewer_id, ts, seller_id, action)| Event {
                event_id: Cow::Owned(event_id),
                stream_id: Cow::Owned(stream_id),
                viewer_id: Cow::Owned(viewer_id),
                ts,
                seller_id: seller_id.map(Cow::Owned),
                action,
            },
        )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2_000))]

    #[test]
    fn json_round_trip(event in event()) {
        let bytes = to_json(&event);
        let header = Encoding::Json.content_type().as_bytes();
        prop_assert_eq!(decode(&bytes, Some(header), None, &DecodeConfig::default()), Ok(event.clone()));
        prop_assert_eq!(decode(&bytes, None, Some(event.ts), &DecodeConfig::default()), Ok(event));
    }

    #[test]
    fn protobuf_round_trip(event in event()) {
        let bytes = to_protobuf(&event);
        let header = Encoding::Protobuf.content_type().as_bytes();
        prop_assert_eq!(decode(&bytes, Some(header), None, &DecodeConfig::default()), Ok(event.clone()));
        prop_assert_eq!(decode(&bytes, None, Some(event.ts), &DecodeConfig::default()), Ok(event));
    }
}

#[test]
fn every_type_round_trips() {
    for ty in EventType::ALL {
        let line = OrderLine {
            product_id: "p".into(),
            order_id: "o".into(),
            quantity: 1,
            unit_price: 0,
            currency: Currency(*b"XTS"),
        };
        let action = match ty {
            EventType::View => Action::View,
            EventType::Leave => Action::Leave,
            EventType::Impression => Action::Impression {
                product_id: "p".into(),
            },
            EventType::Click => Action::Click {
                product_id: "p".into(),
            },
            EventType::AddToCart => Action::AddToCart {
                product_id: "p".into(),
            },
            EventType::Purchase => Action::Purchase(line),
            EventType::Refund => Action::Refund(line),
            EventType::Like => Action::Like,
            EventType::Comment => Action::Comment,
            EventType::Share => Action::Share,
            EventType::Follow => Action::Follow,
        };
        let event = Event {
            action,
            ..purchase()
        };
        let config = DecodeConfig::default();
        assert_eq!(
            decode(&to_json(&event), None, None, &config).as_ref(),
            Ok(&event)
        );
        assert_eq!(
            decode(&to_protobuf(&event), None, None, &config).as_ref(),
            Ok(&event)
        );
    }
}
