//! Prometheus `/metrics` (and `/healthz`, the runner's liveness probe) on a listener of its
//! own (`[metrics] listen`), in every role: the
//! gateway's, the registry's and the runner's metrics, and the process's own (resident
//! memory, CPU, open files). It is kept off the API's port so that tenants' names in the
//! labels reach only whoever can reach this port.

use std::net::SocketAddr;

use actix_web::{App, HttpResponse, HttpServer, web};
use anyhow::Context as _;
use prometheus::Encoder as _;
use registry::db::Db;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MetricsConfig {
    /// Serve `/metrics` at all.
    pub enabled: bool,
    /// Where `/metrics` listens (its own port; keep it private to the cluster). Unset:
    /// [`DEFAULT_LISTEN`] for `serve`; for `dev`, a free loopback port it prints, so that a
    /// `dev` starts beside any other modelgate on the machine.
    pub listen: Option<SocketAddr>,
}

/// Where `serve` puts `/metrics` unless told otherwise.
pub const DEFAULT_LISTEN: SocketAddr = SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 9464);

impl Default for MetricsConfig {
    fn default() -> Self {
        Self { enabled: true, listen: None }
    }
}

pub type Task = tokio::task::JoinHandle<std::io::Result<()>>;

/// Starts `/metrics`; `db` (where this role has one) reports its pool at each scrape.
pub fn serve(listen: SocketAddr, db: Option<Db>) -> anyhow::Result<(SocketAddr, actix_web::dev::ServerHandle, Task)> {
    static PROCESS: std::sync::Once = std::sync::Once::new();
    PROCESS.call_once(|| {
        let process = prometheus::process_collector::ProcessCollector::for_self();
        if let Err(e) = prometheus::register(Box::new(process)) {
            tracing::warn!(error = %e, "process metrics are not available");
        }
    });
    let listener = std::net::TcpListener::bind(listen).with_context(|| format!("binding /metrics to {listen}"))?;
    let addr = listener.local_addr()?;
    let db = web::Data::new(db);
    let server = HttpServer::new(move || {
        App::new()
            .app_data(db.clone())
            .route("/metrics", web::get().to(scrape))
            .route("/healthz", web::get().to(|| async { HttpResponse::Ok().body("ok") }))
    })
    .workers(1)
    .listen(listener)?
    .disable_signals()
    .shutdown_timeout(1)
    .run();
    let handle = server.handle();
    tracing::info!(metrics.addr = %addr, "metrics listening");
    Ok((addr, handle, tokio::spawn(server)))
}

async fn scrape(db: web::Data<Option<Db>>) -> HttpResponse {
    if let Some(db) = db.as_ref() {
        db.observe_pool();
    }
    let encoder = prometheus::TextEncoder::new();
    let mut body = Vec::new();
    match encoder.encode(&prometheus::gather(), &mut body) {
        Ok(()) => HttpResponse::Ok().content_type(encoder.format_type()).body(body),
        Err(e) => {
            tracing::error!(error = %e, "encoding the metrics failed");
            HttpResponse::InternalServerError().finish()
        }
    }
}
