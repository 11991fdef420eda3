//! The HTTP API (spec §3): the dashboard, JSON reads of the read model, the
//! live SSE feed, `/metrics`, `/healthz` and `/readyz`.
//!
//! Handlers only read published snapshots; none touches aggregation state.

mod routes;

use std::net::SocketAddr;
use std::sync::Arc;

use axum::routing::get;
use axum::Router;
use metrics_exporter_prometheus::PrometheusHandle;
use tokio::net::TcpListener;

use crate::readmodel::ReadModel;

pub use routes::ApiError;

/// What the handlers share.
#[derive(Clone)]
pub struct ApiState {
    /// Published snapshots.
    pub model: Arc<ReadModel>,
    /// Renders `/metrics`.
    pub metrics: PrometheusHandle,
}

/// The router with every route of the contract.
pub fn router(state: ApiState) -> Router {
    Router::new()
        .route("/", get(routes::dashboard))
        .route("/v1/streams", get(routes::list_streams))
        .route("/v1/streams/{stream_id}", get(routes::get_stream))
        .route("/v1/streams/{stream_id}/windows", get(routes::get_windows))
        .route(
            "/v1/streams/{stream_id}/products",
            get(routes::get_products),
        )
        .route("/v1/live", get(routes::live))
        .route("/metrics", get(routes::metrics))
        .route("/healthz", get(routes::healthz))
        .route("/readyz", get(routes::readyz))
        .fallback(routes::not_found)
        .method_not_allowed_fallback(routes::method_not_allowed)
        .with_state(state)
}

/// Binds `addr` (port 0 picks a free one) and returns the bound address and
/// the server future, which ends when `shutdown` resolves.
pub async fn serve(
    addr: SocketAddr,
    state: ApiState,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<(
    SocketAddr,
    impl std::future::Future<Output = std::io::Result<()>>,
)> {
    let listener = TcpListener::bind(addr).await?;
    let local = listener.local_addr()?;
    let app = router(state);
    let server = async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(shutdown)
            .await
    };
    Ok((local, server))
}

#[cfg(test)]
mod tests;
