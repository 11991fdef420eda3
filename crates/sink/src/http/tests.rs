//! Route tests against an in-memory read model.

use std::sync::Arc;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use http_body_util::BodyExt;
use livetally_aggregator::{
    Action, AggregatorConfig, Currency, Event, OrderLine, PartitionAggregator, RollupKind,
};
use serde_json::Value;
use tower::ServiceExt;

use super::{router, ApiState};
use crate::readmodel::ReadModel;
use crate::RollupFormat;

fn event(id: &str, stream: &str, action: Action<'static>) -> Event<'static> {
    Event {
        event_id: id.to_string().into(),
        stream_id: stream.to_string().into(),
        viewer_id: "v1".into(),
        ts: 1_000,
        seller_id: None,
        action,
    }
}

fn purchase(id: &str, stream: &str, product: &str, price: i64) -> Event<'static> {
    event(
        id,
        stream,
        Action::Purchase(OrderLine {
            product_id: product.to_string().into(),
            order_id: id.to_string().into(),
            quantity: 1,
            unit_price: price,
            currency: Currency(*b"USD"),
        }),
    )
}

/// A model with stream `a` (GMV 500, 1 view) and `b` (GMV 100, 3 views).
fn state() -> ApiState {
    let mut agg = PartitionAggregator::new(AggregatorConfig::default());
    let events = [
        purchase("1", "a", "p1", 300),
        purchase("2", "a", "p2", 200),
        event("3", "a", Action::View),
        purchase("4", "b", "p1", 100),
        event("5", "b", Action::View),
        event("6", "b", Action::View),
        event("7", "b", Action::View),
    ];
    for (i, e) in events.iter().enumerate() {
        let _ = agg.apply(e, i as u64);
    }
    let model = Arc::new(ReadModel::new());
    publish(&model, agg.publish(), RollupFormat::Json);
    let recorder = metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder();
    ApiState {
        model,
        metrics: recorder.handle(),
    }
}

/// What the worker does at a publication: show, then encode for the topic.
fn publish(
    model: &ReadModel,
    publications: Vec<livetally_aggregator::Publication>,
    format: RollupFormat,
) -> Vec<crate::OutRollup> {
    model
        .show(publications, true)
        .into_iter()
        .map(|shown| shown.encode(format))
        .collect()
}

async fn get(state: ApiState, uri: &str) -> (StatusCode, Value) {
    request(state, Request::get(uri)).await
}

async fn request(state: ApiState, request: axum::http::request::Builder) -> (StatusCode, Value) {
    let response = router(state)
        .oneshot(request.body(Body::empty()).unwrap())
        .await
        .unwrap();
    let status = response.status();
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

fn ids(body: &Value, list: &str) -> Vec<String> {
    body[list]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["stream_id"].as_str().unwrap().to_string())
        .collect()
}

#[tokio::test]
async fn streams_sort_and_limit() {
    let (status, body) = get(state(), "/v1/streams").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(ids(&body, "streams"), ["a", "b"], "default sort is gmv");
    let (_, body) = get(state(), "/v1/streams?sort=views").await;
    assert_eq!(ids(&body, "streams"), ["b", "a"]);
    let (_, body) = get(state(), "/v1/streams?sort=views&limit=1").await;
    assert_eq!(ids(&body, "streams"), ["b"]);
}

#[tokio::test]
async fn bad_parameters_are_json_errors() {
    for uri in [
        "/v1/streams?sort=price",
        "/v1/streams?limit=0",
        "/v1/streams?limit=x",
        "/v1/streams/a/windows?from=x",
        // A stream id whose escapes are not UTF-8.
        "/v1/streams/%FF",
        "/v1/streams/%FF/windows",
        "/v1/streams/%FF/products",
    ] {
        let (status, body) = get(state(), uri).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{uri}");
        assert!(body["error"].is_string(), "{uri}: {body}");
    }
}

#[tokio::test]
async fn a_wrong_method_is_a_json_405() {
    for (method, uri) in [
        ("POST", "/v1/streams"),
        ("DELETE", "/v1/streams/a"),
        ("PUT", "/v1/streams/a/windows"),
        ("POST", "/metrics"),
    ] {
        let (status, body) = request(state(), Request::builder().method(method).uri(uri)).await;
        assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED, "{method} {uri}");
        assert!(body["error"].as_str().unwrap().contains(method), "{body}");
    }
}

#[tokio::test]
async fn one_stream_and_unknown_stream() {
    let (status, body) = get(state(), "/v1/streams/a").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["gmv"], 500);
    assert_eq!(body["kind"], "cumulative");
    assert_eq!(body["currency"], "USD");
    let (status, body) = get(state(), "/v1/streams/nope").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(body["error"].as_str().unwrap().contains("nope"));
    let (status, body) = get(state(), "/v1/streams/nope/products").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(body["error"].is_string());
}

#[tokio::test]
async fn products_by_gmv() {
    let (status, body) = get(state(), "/v1/streams/a/products?limit=10").await;
    assert_eq!(status, StatusCode::OK);
    let products = body["products"].as_array().unwrap();
    assert_eq!(products.len(), 2);
    assert_eq!(products[0]["product_id"], "p1");
    assert_eq!(products[0]["gmv"], 300);
    assert_eq!(products[1]["gmv"], 200);
    let (_, body) = get(state(), "/v1/streams/a/products?limit=1").await;
    assert_eq!(body["products"].as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn readiness_follows_restore() {
    let state = state();
    let (status, _) = get(state.clone(), "/readyz").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "not joined yet");
    state.model.readiness().assigned(&[0, 1]);
    state.model.readiness().restored(0);
    let (status, body) = get(state.clone(), "/readyz").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(body["restoring"], serde_json::json!([1]));
    state.model.readiness().restored(1);
    let (status, _) = get(state.clone(), "/readyz").await;
    assert_eq!(status, StatusCode::OK);
    let (status, body) = get(state, "/healthz").await;
    assert_eq!(
        (status, body["status"].as_str()),
        (StatusCode::OK, Some("ok"))
    );
}

#[tokio::test]
async fn unknown_route_is_a_json_404() {
    let (status, body) = get(state(), "/v2/nothing").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(body["error"].is_string());
}

#[tokio::test]
async fn live_feed_carries_published_rollups() {
    let state = state();
    let mut feed = state.model.subscribe();
    let mut agg = PartitionAggregator::new(AggregatorConfig::default());
    let _ = agg.apply(&purchase("9", "c", "p9", 42), 0);
    publish(&state.model, agg.publish(), RollupFormat::Json);
    let json: Value = serde_json::from_str(&feed.recv().await.unwrap()).unwrap();
    assert_eq!(json["stream_id"], "c");
    assert_eq!(json["gmv"], 42);
}

#[tokio::test]
async fn merged_rollups_from_the_topic_keep_the_newest_revision() {
    let state = state();
    let mut remote = state.model.rollup("a").unwrap();
    let held = remote.revision;
    remote.gmv = 1;
    assert!(
        !state.model.merge(remote.clone()),
        "same revision: the held one stays"
    );
    remote.revision = held + 1;
    remote.top_products = vec![livetally_aggregator::ProductRollup {
        product_id: "top".into(),
        impressions: 0,
        clicks: 0,
        add_to_carts: 0,
        orders: 1,
        items_sold: 1,
        gmv: 1,
    }];
    assert!(state.model.merge(remote.clone()));
    let (_, body) = get(state.clone(), "/v1/streams/a").await;
    assert_eq!(body["gmv"], 1);
    let (_, body) = get(state.clone(), "/v1/streams/a/products").await;
    assert_eq!(
        body["products"][0]["product_id"], "top",
        "a remote stream's products are its top products"
    );
    // A window of a stream nobody knows yet is refused (kept by the caller).
    let mut window = remote.clone();
    window.stream_id = "unknown".into();
    window.kind = livetally_aggregator::RollupKind::Window;
    window.window_start = Some(0);
    assert!(!state.model.merge(window));
}

#[tokio::test]
async fn each_rollup_is_encoded_once_for_the_live_feed_and_the_topic() {
    let model = ReadModel::new();
    let mut feed = model.subscribe();
    let mut agg = PartitionAggregator::new(AggregatorConfig::default());
    let _ = agg.apply(&purchase("1", "c", "p1", 42), 0);
    let out = publish(&model, agg.publish(), RollupFormat::Json);
    let kinds: Vec<_> = out.iter().map(|o| o.rollup.kind).collect();
    assert_eq!(kinds, [RollupKind::Window, RollupKind::Cumulative]);
    for o in &out {
        let text = feed.recv().await.unwrap();
        // The same bytes, not an equal copy.
        assert_eq!(text.as_ptr(), o.value.as_ptr());
        assert_eq!(RollupFormat::Json.decode(&o.value).unwrap(), *o.rollup);
    }
    // Readers see the published rollup.
    assert_eq!(model.rollup("c").unwrap(), *out[1].rollup);

    // Protobuf on the topic; the live feed stays JSON.
    let _ = agg.apply(&purchase("2", "c", "p1", 8), 1);
    for o in publish(&model, agg.publish(), RollupFormat::Protobuf) {
        let json: Value = serde_json::from_str(&feed.recv().await.unwrap()).unwrap();
        assert_eq!(json["gmv"], 50);
        assert_eq!(RollupFormat::Protobuf.decode(&o.value).unwrap(), *o.rollup);
    }
}

/// Opens `/v1/live`; the handler has subscribed once this returns.
async fn open_live(state: &ApiState) -> Body {
    let response = router(state.clone())
        .oneshot(Request::get("/v1/live").body(Body::empty()).unwrap())
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        response.headers()["content-type"],
        "text/event-stream",
        "Server-Sent Events"
    );
    response.into_body()
}

async fn next_write(body: &mut Body) -> String {
    let frame = body.frame().await.unwrap().unwrap();
    String::from_utf8(frame.into_data().unwrap().to_vec()).unwrap()
}

#[tokio::test]
async fn live_sends_every_ready_rollup_in_one_write() {
    let state = state();
    let mut body = open_live(&state).await;
    let mut agg = PartitionAggregator::new(AggregatorConfig::default());
    let _ = agg.apply(&purchase("1", "c", "p1", 42), 0);
    let _ = agg.apply(&purchase("2", "d", "p1", 7), 1);
    publish(&state.model, agg.publish(), RollupFormat::Json);
    let text = next_write(&mut body).await;
    let events: Vec<&str> = text.split_terminator("\n\n").collect();
    // Two streams, each a window and its cumulative rollup: one write.
    assert_eq!(events.len(), 4, "{text}");
    let streams: Vec<(String, String)> = events
        .iter()
        .map(|event| {
            let data = event.strip_prefix("event: rollup\ndata: ").expect(event);
            let rollup: Value = serde_json::from_str(data).unwrap();
            (
                rollup["stream_id"].as_str().unwrap().to_string(),
                rollup["kind"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let expected = [
        ("c", "window"),
        ("c", "cumulative"),
        ("d", "window"),
        ("d", "cumulative"),
    ]
    .map(|(s, k)| (s.to_string(), k.to_string()));
    assert_eq!(streams, expected);
}

#[tokio::test]
async fn a_live_client_that_falls_behind_is_told_what_it_skipped() {
    let state = state();
    let mut body = open_live(&state).await;
    let mut agg = PartitionAggregator::new(AggregatorConfig::default());
    // 3,000 streams, two rollups each: more than the feed buffers.
    for i in 0..3_000u64 {
        let _ = agg.apply(&purchase(&format!("e{i}"), &format!("s{i}"), "p", 1), i);
    }
    publish(&state.model, agg.publish(), RollupFormat::Json);
    let text = next_write(&mut body).await;
    let skipped = text
        .strip_prefix(": skipped ")
        .and_then(|rest| rest.split(' ').next())
        .map(|n| n.parse::<u64>().unwrap());
    assert_eq!(skipped, Some(6_000 - 4_096), "{}", &text[..80]);
    let after = text.split_once("\n\n").unwrap().1;
    assert!(
        after.starts_with("event: rollup\ndata: {"),
        "{}",
        &after[..80]
    );
}
