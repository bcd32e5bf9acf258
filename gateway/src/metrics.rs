//! The gateway's Prometheus metrics (the process serves them on `metrics.listen`; names are
//! listed in docs/OPERATIONS.md, which a test keeps complete).

use std::sync::LazyLock;

use prometheus::{
    HistogramVec, IntCounter, IntCounterVec, IntGaugeVec, register_histogram_vec, register_int_counter,
    register_int_counter_vec, register_int_gauge_vec,
};

/// Seconds, from a millisecond to half a minute (generations run long).
pub const LATENCY_BUCKETS: &[f64] =
    &[0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0];

macro_rules! metric {
    ($register:ident, $name:literal, $help:literal, $labels:expr $(, $buckets:expr)?) => {
        LazyLock::new(|| {
            $register!($name, $help, $labels $(, $buckets.to_vec())?).expect(concat!($name, " is registered once (a bug otherwise)"))
        })
    };
}

pub static HTTP_REQUESTS: LazyLock<IntCounterVec> = metric!(
    register_int_counter_vec,
    "modelgate_http_requests_total",
    "HTTP requests answered, by method, route pattern and status.",
    &["method", "route", "status"]
);

pub static HTTP_DURATION: LazyLock<HistogramVec> = metric!(
    register_histogram_vec,
    "modelgate_http_request_duration_seconds",
    "Time to answer an HTTP request (to its headers, for a stream), by method and route pattern.",
    &["method", "route"],
    LATENCY_BUCKETS
);

pub static INFERENCE_REQUESTS: LazyLock<IntCounterVec> = metric!(
    register_int_counter_vec,
    "modelgate_inference_requests_total",
    "Inference requests by tenant, model, version and outcome (ok or error).",
    &["tenant", "model", "version", "outcome"]
);

pub static INFERENCE_DURATION: LazyLock<HistogramVec> = metric!(
    register_histogram_vec,
    "modelgate_inference_request_duration_seconds",
    "Inference request duration (to the last token for a generation), by tenant, model, version and outcome.",
    &["tenant", "model", "version", "outcome"],
    LATENCY_BUCKETS
);

pub static LIMIT_REJECTIONS: LazyLock<IntCounterVec> = metric!(
    register_int_counter_vec,
    "modelgate_limit_rejections_total",
    "Requests refused with 429 by a tenant's or key's limit, by tenant and limit.",
    &["tenant", "limit"]
);

pub static UPLOAD_BYTES: LazyLock<IntCounterVec> = metric!(
    register_int_counter_vec,
    "modelgate_upload_bytes_total",
    "Bytes of model files received (whole files and resumable chunks), by tenant.",
    &["tenant"]
);

pub static UPLOAD_DURATION: LazyLock<HistogramVec> = metric!(
    register_histogram_vec,
    "modelgate_upload_duration_seconds",
    "Time to receive and store one file or chunk, by tenant.",
    &["tenant"],
    &[0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 15.0, 60.0, 300.0]
);

pub static RUNNER_UP: LazyLock<IntGaugeVec> = metric!(
    register_int_gauge_vec,
    "modelgate_gateway_runner_up",
    "Whether the runner answered this gateway's last status poll with its circuit closed (1) or not (0).",
    &["runner"]
);

pub static VERSION_STRIKES: LazyLock<IntCounter> = LazyLock::new(|| {
    register_int_counter!(
        "modelgate_version_strikes_total",
        "Strikes against versions in flight on a runner that died (a version alone in flight counts 2)."
    )
    .expect("registered once (a bug otherwise)")
});

pub static VERSION_QUARANTINES: LazyLock<IntCounter> = LazyLock::new(|| {
    register_int_counter!(
        "modelgate_version_quarantines_total",
        "Versions this gateway quarantined: 2 strikes within 10 minutes."
    )
    .expect("registered once (a bug otherwise)")
});

/// One received upload (a whole file or a chunk).
pub fn upload(tenant: &str, bytes: u64, elapsed: std::time::Duration) {
    UPLOAD_BYTES.with_label_values(&[tenant]).inc_by(bytes);
    UPLOAD_DURATION.with_label_values(&[tenant]).observe(elapsed.as_secs_f64());
}

/// The method as a label: the standard ones by name, any other token (a client may send a
/// made-up method of any length) as `other`, so clients cannot mint series.
pub fn method_label(method: &actix_web::http::Method) -> &'static str {
    use actix_web::http::Method as M;
    match *method {
        M::GET => "GET",
        M::HEAD => "HEAD",
        M::POST => "POST",
        M::PUT => "PUT",
        M::DELETE => "DELETE",
        M::PATCH => "PATCH",
        M::OPTIONS => "OPTIONS",
        M::CONNECT => "CONNECT",
        M::TRACE => "TRACE",
        _ => "other",
    }
}
