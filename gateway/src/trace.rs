//! The request id and W3C trace context of each HTTP request: taken from the caller's
//! `x-request-id` and `traceparent` headers (or made up), on every log line of the request,
//! sent on to the runner as gRPC metadata, and answered in the response headers. The trace
//! context is read and written by OpenTelemetry's propagator only (`proto::trace`, which the
//! runner reads the call's metadata with).

use std::collections::HashMap;
use std::future::Future;

use actix_web::http::header::HeaderMap;
use opentelemetry::trace::{SpanContext, SpanId, TraceContextExt as _, TraceFlags, TraceId, TraceState};

pub const REQUEST_ID: &str = "x-request-id";
pub const TRACEPARENT: &str = "traceparent";

#[derive(Debug, Clone)]
pub struct RequestContext {
    pub request_id: String,
    /// This gateway's span: in the caller's trace (with its sampling decision and trace state)
    /// or a new one.
    span: SpanContext,
    /// The caller's trace context, from its `traceparent` (empty without a valid one).
    caller: opentelemetry::Context,
}

tokio::task_local! {
    static CURRENT: RequestContext;
}

/// An HTTP request's headers as the propagator's carrier to read from.
struct HeaderExtractor<'a>(&'a HeaderMap);

impl opentelemetry::propagation::Extractor for HeaderExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(|k| k.as_str()).collect()
    }
}

/// A span id of this gateway's (random, as the OpenTelemetry SDK makes them).
fn new_span_id() -> SpanId {
    SpanId::from_bytes(rand::random())
}

/// A request id the caller may choose: short, printable, no spaces.
fn acceptable_request_id(value: &str) -> bool {
    (1..=128).contains(&value.len()) && value.bytes().all(|b| b.is_ascii_graphic())
}

impl RequestContext {
    pub fn from_headers(headers: &HeaderMap) -> Self {
        let request_id = headers
            .get(REQUEST_ID)
            .and_then(|v| v.to_str().ok())
            .filter(|v| acceptable_request_id(v))
            .map_or_else(|| uuid::Uuid::now_v7().simple().to_string(), str::to_owned);
        let caller = proto::trace::extract(&HeaderExtractor(headers));
        let remote = caller.span().span_context().clone();
        let span = if remote.is_valid() {
            let state = remote.trace_state().clone();
            SpanContext::new(remote.trace_id(), new_span_id(), remote.trace_flags(), false, state)
        } else {
            let trace = TraceId::from_bytes(rand::random());
            SpanContext::new(trace, new_span_id(), TraceFlags::default(), false, TraceState::default())
        };
        Self { request_id, span, caller }
    }

    /// The trace this request is in.
    pub fn trace_id(&self) -> TraceId {
        self.span.trace_id()
    }

    /// When spans are exported (an OpenTelemetry layer is installed), makes `span` the child of
    /// the caller's span and takes its ids, so the logs, the answer's `traceparent` and the
    /// runner's spans name the spans the collector receives. Without one it changes nothing.
    pub fn link(&mut self, span: &tracing::Span) {
        use tracing_opentelemetry::OpenTelemetrySpanExt as _;
        if self.caller.span().span_context().is_valid() && span.set_parent(self.caller.clone()).is_err() {
            return;
        }
        let exported = span.context().span().span_context().clone();
        if exported.is_valid() {
            self.span = exported;
        }
    }

    /// This gateway's span as an OpenTelemetry context, for the propagator to write.
    fn otel_context(&self) -> opentelemetry::Context {
        opentelemetry::Context::new().with_remote_span_context(self.span.clone())
    }

    /// The `traceparent` naming this gateway's span as the parent.
    pub fn traceparent(&self) -> String {
        let mut headers = HashMap::new();
        proto::trace::inject(&self.otel_context(), &mut headers);
        headers.remove(TRACEPARENT).unwrap_or_default()
    }

    /// Runs `f` with this as the current request's context.
    pub fn scope<F: Future>(self, f: F) -> impl Future<Output = F::Output> {
        CURRENT.scope(self, f)
    }

    /// The context of the request being handled, if any.
    pub fn current() -> Option<Self> {
        CURRENT.try_with(Clone::clone).ok()
    }
}

/// A gRPC request carrying the current request's id and trace context, with a deadline.
pub fn grpc_request<T>(message: T, timeout: std::time::Duration) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request.set_timeout(timeout);
    if let Some(context) = RequestContext::current() {
        let metadata = request.metadata_mut();
        if let Ok(v) = context.request_id.parse() {
            metadata.insert(REQUEST_ID, v);
        }
        proto::trace::to_metadata(&context.otel_context(), metadata);
    }
    request
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_traceparent(value: &str) -> RequestContext {
        let mut headers = HeaderMap::new();
        headers.insert(actix_web::http::header::HeaderName::from_static(TRACEPARENT), value.parse().expect("header"));
        RequestContext::from_headers(&headers)
    }

    #[test]
    fn only_a_well_formed_traceparent_keeps_the_callers_trace() {
        let trace = "4bf92f3577b34da6a3ce929d0e0e4736";
        // A later version is read as version 00's fields, as W3C Trace Context says.
        for good in [format!("00-{trace}-00f067aa0ba902b7-01"), format!("01-{trace}-00f067aa0ba902b7-01")] {
            assert_eq!(with_traceparent(&good).trace_id().to_string(), trace, "{good}");
        }
        for bad in [
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-xx",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        ] {
            let context = with_traceparent(bad);
            assert_ne!(context.trace_id().to_string(), trace, "{bad}");
            assert!(context.traceparent().ends_with("-00"), "a new trace, not sampled: {bad}");
        }
    }

    #[tokio::test]
    async fn the_runner_call_names_the_gateways_span_in_the_callers_trace() {
        let mut context = with_traceparent("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01");
        context.request_id = "req-7".into();
        let traceparent = context.traceparent();
        let request = context.scope(async { grpc_request((), std::time::Duration::from_secs(1)) }).await;
        let sent = |name| request.metadata().get(name).and_then(|v| v.to_str().ok()).map(str::to_owned);
        assert_eq!(sent(TRACEPARENT), Some(traceparent));
        assert_eq!(sent(REQUEST_ID).as_deref(), Some("req-7"));
        let parent = proto::trace::from_metadata(request.metadata());
        assert_eq!(parent.span().span_context().trace_id().to_string(), "4bf92f3577b34da6a3ce929d0e0e4736");
    }

    #[test]
    fn a_context_keeps_the_callers_trace_and_request_id() {
        let mut headers = HeaderMap::new();
        headers.insert(
            actix_web::http::header::HeaderName::from_static(TRACEPARENT),
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".parse().expect("header"),
        );
        headers.insert(actix_web::http::header::HeaderName::from_static(REQUEST_ID), "req-42".parse().expect("header"));
        let c = RequestContext::from_headers(&headers);
        assert_eq!(
            (c.request_id.as_str(), c.trace_id().to_string().as_str()),
            ("req-42", "4bf92f3577b34da6a3ce929d0e0e4736")
        );
        assert!(
            c.traceparent().starts_with("00-4bf92f3577b34da6a3ce929d0e0e4736-") && c.traceparent().ends_with("-01")
        );
        assert_ne!(&c.traceparent()[36..52], "00f067aa0ba902b7", "the gateway's own span is the runner's parent");
        let fresh = RequestContext::from_headers(&HeaderMap::new()).traceparent();
        assert_eq!(fresh.split('-').map(str::len).collect::<Vec<_>>(), [2, 32, 16, 2], "{fresh}");
    }
}
