//! Traces over OTLP: `modelgate dev` with `tracing.otlp_endpoint` set exports its spans to a
//! collector (this test's own, on loopback). The caller's `traceparent` is the parent of the
//! gateway's request span, the runner's gRPC call is that span's child (and the model thread's
//! queue wait and compute are its children), and the answer's
//! `traceparent` names the gateway's span, so a caller can find its request in the tracing UI.
//! The logs are quiet (`warn`) meanwhile: the span filter is not the log's.

use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{TraceService, TraceServiceServer};
use opentelemetry_proto::tonic::collector::trace::v1::{ExportTraceServiceRequest, ExportTraceServiceResponse};
use opentelemetry_proto::tonic::common::v1::any_value::Value as AnyValue;
use serde_json::json;

use crate::dev_binary::{BIN, free_port, start_dev};

#[derive(Debug, Clone)]
struct Received {
    service: String,
    name: String,
    trace_id: String,
    span_id: String,
    parent_span_id: String,
}

#[derive(Default, Clone)]
struct Collector(Arc<Mutex<Vec<Received>>>);

#[tonic::async_trait]
impl TraceService for Collector {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let mut received = self.0.lock().expect("not poisoned");
        for resource_spans in request.into_inner().resource_spans {
            let service = resource_spans
                .resource
                .iter()
                .flat_map(|r| &r.attributes)
                .find(|kv| kv.key == "service.name")
                .and_then(|kv| match kv.value.as_ref().and_then(|v| v.value.as_ref()) {
                    Some(AnyValue::StringValue(s)) => Some(s.clone()),
                    _ => None,
                })
                .unwrap_or_default();
            for span in resource_spans.scope_spans.into_iter().flat_map(|s| s.spans) {
                received.push(Received {
                    service: service.clone(),
                    name: span.name,
                    trace_id: hex::encode(span.trace_id),
                    span_id: hex::encode(span.span_id),
                    parent_span_id: hex::encode(span.parent_span_id),
                });
            }
        }
        Ok(tonic::Response::new(ExportTraceServiceResponse { partial_success: None }))
    }
}

impl Collector {
    /// Waits (up to 20 s: the exporter sends in batches) for a span matching `wanted`.
    async fn wait_for(&self, what: &str, wanted: impl Fn(&Received) -> bool) -> Received {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(found) = self.0.lock().expect("not poisoned").iter().find(|s| wanted(s)) {
                return found.clone();
            }
            assert!(Instant::now() < deadline, "no {what} reached the collector: {:?}", self.0.lock().expect("lock"));
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// `00-{trace}-{span}-{flags}`: the trace and span ids.
fn ids(traceparent: &str) -> (String, String) {
    let parts: Vec<&str> = traceparent.split('-').collect();
    assert_eq!(parts.len(), 4, "{traceparent}");
    (parts[1].to_owned(), parts[2].to_owned())
}

#[tokio::test(flavor = "multi_thread")]
async fn spans_reach_an_otlp_collector_as_one_trace_under_the_callers_span() {
    let collector = Collector::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("a collector port");
    let endpoint = format!("http://{}", listener.local_addr().expect("address"));
    let server = tonic::transport::Server::builder()
        .add_service(TraceServiceServer::new(collector.clone()))
        .serve_with_incoming(tonic::transport::server::TcpIncoming::from(listener));
    tokio::spawn(server);

    let dir = tempfile::tempdir().expect("temporary folder");
    let port = free_port();
    let dev_dir = dir.path().to_owned();
    let dev = tokio::task::spawn_blocking(move || {
        let env = [
            ("MODELGATE__TRACING__OTLP_ENDPOINT", endpoint.as_str()),
            ("MODELGATE__TRACING__SERVICE_NAME", "modelgate-under-test"),
            // Quiet logs (start_dev's RUST_LOG=warn) export the spans all the same: `[tracing]
            // filter` decides that, not the log's filter.
            // The SDK's batch interval (5 s by default), shortened so the test waits less.
            ("OTEL_BSP_SCHEDULE_DELAY", "200"),
        ];
        start_dev(&dev_dir, port, &env)
    })
    .await
    .expect("joined");
    let base = format!("http://127.0.0.1:{port}");
    let admin = std::fs::read_to_string(dir.path().join("modelgate-data/admin.key")).expect("admin.key");
    let admin = admin.trim();
    let http = reqwest::Client::new();
    let created = http
        .post(format!("{base}/api/v1/tenants"))
        .bearer_auth(admin)
        .json(&json!({"name": "acme"}))
        .send()
        .await
        .expect("tenant");
    assert_eq!(created.status(), 201);
    let key: serde_json::Value = http
        .post(format!("{base}/api/v1/tenants/acme/keys"))
        .bearer_auth(admin)
        .json(&json!({"name": "traced", "role": "developer"}))
        .send()
        .await
        .expect("key")
        .json()
        .await
        .expect("JSON");
    let key = key["key"].as_str().expect("the secret").to_owned();
    let model = dir.path().join("tiny");
    crate::tiny_bert::write(&model);
    let pushed = Command::new(BIN)
        .args(["push", &model.display().to_string(), "acme/tiny", "--url", &base, "--key", &key])
        .output()
        .expect("push runs");
    assert!(pushed.status.success(), "{}", String::from_utf8_lossy(&pushed.stderr));

    // A call that carries the caller's trace context.
    let (trace, caller) = ("4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7");
    let answer = http
        .post(format!("{base}/v1/embeddings"))
        .bearer_auth(&key)
        .header("traceparent", format!("00-{trace}-{caller}-01"))
        .json(&json!({"model": "tiny", "input": "hello"}))
        .send()
        .await
        .expect("embeddings");
    assert_eq!(answer.status(), 200);
    let header = answer.headers()["traceparent"].to_str().expect("text").to_owned();
    let (answered_trace, gateway_span) = ids(&header);
    assert_eq!(answered_trace, trace, "the answer stays in the caller's trace");
    let request = collector
        .wait_for("gateway span under the caller's", |s| s.name == "request" && s.parent_span_id == caller)
        .await;
    assert_eq!((request.trace_id.as_str(), request.span_id.as_str()), (trace, gateway_span.as_str()));
    assert_eq!(request.service, "modelgate-under-test");
    let rpc = collector.wait_for("runner span", |s| s.name == "rpc" && s.parent_span_id == gateway_span).await;
    assert_eq!(rpc.trace_id, trace, "the runner's span is in the same trace");
    // On the model's thread: the wait in its queue, then the batch it ran in.
    for name in ["queue", "compute"] {
        let span = collector.wait_for(name, |s| s.name == name && s.parent_span_id == rpc.span_id).await;
        assert_eq!(span.trace_id, trace);
    }

    // A call without one starts a trace, and its answer names it.
    let answer = http.get(format!("{base}/api/v1/auth/whoami")).bearer_auth(&key).send().await.expect("whoami");
    assert_eq!(answer.status(), 200);
    let (new_trace, span) = ids(answer.headers()["traceparent"].to_str().expect("text"));
    assert_ne!(new_trace, trace);
    let root = collector.wait_for("root span", |s| s.trace_id == new_trace).await;
    assert_eq!(
        (root.name.as_str(), root.span_id.as_str(), root.parent_span_id.as_str()),
        ("request", span.as_str(), "")
    );
    drop(dev);
}
