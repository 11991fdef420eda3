//! One handler per route, and the JSON error type.

use std::collections::HashMap;
use std::convert::Infallible;
use std::time::Duration;

use axum::body::Body;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, Query, State};
use axum::http::{header, Method, StatusCode, Uri};
use axum::response::{Html, IntoResponse, Response};
use axum::Json;
use livetally_aggregator::StreamRollup;
use serde_json::json;
use tokio::sync::broadcast::error::{RecvError, TryRecvError};

use super::ApiState;
use crate::readmodel::SortKey;

const DASHBOARD: &str = include_str!("../../assets/dashboard.html");
/// Default and largest `limit` for list routes.
const DEFAULT_LIMIT: usize = 100;
const MAX_LIMIT: usize = 10_000;

/// A JSON error answer: `{"error": "…"}` with a status code.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    message: String,
}

impl ApiError {
    fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError {
            status: StatusCode::BAD_REQUEST,
            message: message.into(),
        }
    }

    fn method_not_allowed(message: impl Into<String>) -> ApiError {
        ApiError {
            status: StatusCode::METHOD_NOT_ALLOWED,
            message: message.into(),
        }
    }

    fn not_found(message: impl Into<String>) -> ApiError {
        ApiError {
            status: StatusCode::NOT_FOUND,
            message: message.into(),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status, Json(json!({ "error": self.message }))).into_response()
    }
}

type Params = Query<HashMap<String, String>>;

fn parse_limit(params: &HashMap<String, String>) -> Result<usize, ApiError> {
    match params.get("limit") {
        None => Ok(DEFAULT_LIMIT),
        Some(raw) => match raw.parse::<usize>() {
            Ok(n) if (1..=MAX_LIMIT).contains(&n) => Ok(n),
            _ => Err(ApiError::bad_request(format!(
                "limit must be an integer from 1 to {MAX_LIMIT}, got {raw:?}"
            ))),
        },
    }
}

fn parse_ms(params: &HashMap<String, String>, name: &str) -> Result<Option<i64>, ApiError> {
    params
        .get(name)
        .map(|raw| {
            raw.parse::<i64>().map_err(|_| {
                ApiError::bad_request(format!("{name} must be epoch milliseconds, got {raw:?}"))
            })
        })
        .transpose()
}

pub(super) async fn dashboard() -> Html<&'static str> {
    Html(DASHBOARD)
}

pub(super) async fn list_streams(
    State(state): State<ApiState>,
    Query(params): Params,
) -> Result<Response, ApiError> {
    let limit = parse_limit(&params)?;
    let key = match params.get("sort").map(String::as_str) {
        None | Some("gmv") => SortKey::Gmv,
        Some("views") => SortKey::Views,
        Some("orders") => SortKey::Orders,
        Some(other) => {
            return Err(ApiError::bad_request(format!(
                "sort must be gmv, views or orders, got {other:?}"
            )))
        }
    };
    Ok(Json(json!({ "streams": state.model.top(key, limit) })).into_response())
}

fn unknown(stream_id: &str) -> ApiError {
    ApiError::not_found(format!("unknown stream {stream_id:?}"))
}

/// The stream id of the path, or a JSON 400 when it does not decode (its
/// percent-escapes are not UTF-8).
fn stream_id(path: Result<Path<String>, PathRejection>) -> Result<String, ApiError> {
    path.map(|Path(stream_id)| stream_id)
        .map_err(|rejection| ApiError::bad_request(rejection.body_text()))
}

pub(super) async fn get_stream(
    State(state): State<ApiState>,
    path: Result<Path<String>, PathRejection>,
) -> Result<Json<StreamRollup>, ApiError> {
    let stream_id = stream_id(path)?;
    state
        .model
        .rollup(&stream_id)
        .map(Json)
        .ok_or_else(|| unknown(&stream_id))
}

pub(super) async fn get_windows(
    State(state): State<ApiState>,
    path: Result<Path<String>, PathRejection>,
    Query(params): Params,
) -> Result<Response, ApiError> {
    let stream_id = stream_id(path)?;
    let from = parse_ms(&params, "from")?.unwrap_or(i64::MIN);
    let to = parse_ms(&params, "to")?.unwrap_or(i64::MAX);
    if from > to {
        return Err(ApiError::bad_request("from must not be after to"));
    }
    // A window is listed when it overlaps [from, to).
    let windows = state
        .model
        .windows(&stream_id, from, to)
        .ok_or_else(|| unknown(&stream_id))?;
    Ok(Json(json!({ "windows": windows })).into_response())
}

pub(super) async fn get_products(
    State(state): State<ApiState>,
    path: Result<Path<String>, PathRejection>,
    Query(params): Params,
) -> Result<Response, ApiError> {
    let stream_id = stream_id(path)?;
    let limit = parse_limit(&params)?;
    let products = state
        .model
        .products(&stream_id, limit)
        .ok_or_else(|| unknown(&stream_id))?;
    Ok(Json(json!({ "products": products })).into_response())
}

/// Most bytes of rollups one write of `/v1/live` carries.
const LIVE_WRITE_BYTES: usize = 256 * 1024;
/// A comment line this often keeps an idle `/v1/live` connection open.
const LIVE_KEEP_ALIVE: Duration = Duration::from_secs(15);

/// `/v1/live`: every rollup as it is published, as Server-Sent Events
/// (`event: rollup`, `data:` its JSON). Each write carries every rollup
/// ready by then, not one rollup per write: at tens of thousands of rollups
/// a second, a write (and a frame) each would fall behind. A client too slow
/// even so skips ahead, and is told so in a comment (`: skipped N rollups`).
pub(super) async fn live(State(state): State<ApiState>) -> Response {
    let feed = futures::stream::unfold(state.model.subscribe(), |mut feed| async move {
        let mut out = String::new();
        match tokio::time::timeout(LIVE_KEEP_ALIVE, feed.recv()).await {
            Err(_) => out.push_str(":\n\n"),
            Ok(Ok(json)) => push_rollup(&mut out, &json),
            Ok(Err(RecvError::Lagged(n))) => push_skipped(&mut out, n),
            Ok(Err(RecvError::Closed)) => return None,
        }
        while out.len() < LIVE_WRITE_BYTES {
            match feed.try_recv() {
                Ok(json) => push_rollup(&mut out, &json),
                Err(TryRecvError::Lagged(n)) => push_skipped(&mut out, n),
                Err(TryRecvError::Empty | TryRecvError::Closed) => break,
            }
        }
        Some((Ok::<_, Infallible>(out), feed))
    });
    (
        [
            (header::CONTENT_TYPE, "text/event-stream"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        Body::from_stream(feed),
    )
        .into_response()
}

fn push_rollup(out: &mut String, json: &str) {
    // Rollup JSON is one line: it needs no splitting into `data:` lines.
    out.push_str("event: rollup\ndata: ");
    out.push_str(json);
    out.push_str("\n\n");
}

fn push_skipped(out: &mut String, n: u64) {
    out.push_str(&format!(": skipped {n} rollups\n\n"));
}

pub(super) async fn metrics(State(state): State<ApiState>) -> Response {
    metrics::gauge!(crate::metrics::ACTIVE_STREAMS).set(state.model.len() as f64);
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        state.metrics.render(),
    )
        .into_response()
}

pub(super) async fn healthz() -> Json<serde_json::Value> {
    Json(json!({ "status": "ok" }))
}

pub(super) async fn readyz(State(state): State<ApiState>) -> Response {
    let (ready, restoring) = state.model.readiness().status();
    let body = json!({ "ready": ready, "partitions": state.model.readiness().partitions(), "restoring": restoring });
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(body)).into_response()
}

pub(super) async fn not_found() -> ApiError {
    ApiError::not_found("no such route")
}

pub(super) async fn method_not_allowed(method: Method, uri: Uri) -> ApiError {
    ApiError::method_not_allowed(format!("{method} is not allowed on {}", uri.path()))
}
