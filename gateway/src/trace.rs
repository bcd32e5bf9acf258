//! The request id and W3C trace context of each HTTP request: taken from the caller's
//! `x-request-id` and `traceparent` headers (or made up), on every log line of the request,
//! sent on to the runner as gRPC metadata, and answered in the response headers.

use std::future::Future;

use actix_web::http::header::HeaderMap;
use rand::RngCore as _;

pub const REQUEST_ID: &str = "x-request-id";
pub const TRACEPARENT: &str = "traceparent";

#[derive(Debug, Clone)]
pub struct RequestContext {
    pub request_id: String,
    /// 32 lower-case hex digits.
    pub trace_id: String,
    /// This gateway's span in the trace (16 hex digits).
    pub span_id: String,
    sampled: bool,
    /// The caller's span, from its `traceparent`.
    caller_span: Option<String>,
}

tokio::task_local! {
    static CURRENT: RequestContext;
}

fn random_hex(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    rand::rng().fill_bytes(&mut buf);
    hex::encode(buf)
}

/// `00-{trace}-{parent}-{flags}` with non-zero ids: the trace, the parent span and whether it is
/// sampled; None for anything else.
fn parse_traceparent(value: &str) -> Option<(String, String, bool)> {
    let mut parts = value.trim().split('-');
    let (version, trace, parent, flags) = (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    let hex = |s: &str, len: usize| s.len() == len && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
    let nonzero = |s: &str| s.bytes().any(|b| b != b'0');
    (version == "00"
        && parts.next().is_none()
        && hex(trace, 32)
        && nonzero(trace)
        && hex(parent, 16)
        && nonzero(parent)
        && hex(flags, 2))
    .then(|| (trace.to_owned(), parent.to_owned(), u8::from_str_radix(flags, 16).is_ok_and(|f| f & 1 == 1)))
}

/// A request id the caller may choose: short, printable, no spaces.
fn acceptable_request_id(value: &str) -> bool {
    (1..=128).contains(&value.len()) && value.bytes().all(|b| b.is_ascii_graphic())
}

impl RequestContext {
    pub fn from_headers(headers: &HeaderMap) -> Self {
        let header = |name| headers.get(name).and_then(|v| v.to_str().ok());
        let request_id = header(REQUEST_ID)
            .filter(|v| acceptable_request_id(v))
            .map_or_else(|| uuid::Uuid::now_v7().simple().to_string(), str::to_owned);
        let (trace_id, caller_span, sampled) = match header(TRACEPARENT).and_then(parse_traceparent) {
            Some((trace, parent, sampled)) => (trace, Some(parent), sampled),
            None => (random_hex(16), None, false),
        };
        Self { request_id, trace_id, span_id: random_hex(8), sampled, caller_span }
    }

    /// When spans are exported (an OpenTelemetry layer is installed), makes `span` the child of
    /// the caller's span and takes its ids, so the logs, the answer's `traceparent` and the
    /// runner's spans name the spans the collector receives. Without one it changes nothing.
    pub fn link(&mut self, span: &tracing::Span) {
        use opentelemetry::trace::{SpanContext, SpanId, TraceContextExt as _, TraceFlags, TraceId, TraceState};
        use tracing_opentelemetry::OpenTelemetrySpanExt as _;
        if let Some(caller) = &self.caller_span {
            let (Ok(trace), Ok(parent)) = (TraceId::from_hex(&self.trace_id), SpanId::from_hex(caller)) else {
                return;
            };
            let flags = if self.sampled { TraceFlags::SAMPLED } else { TraceFlags::default() };
            let remote = SpanContext::new(trace, parent, flags, true, TraceState::default());
            if span.set_parent(opentelemetry::Context::new().with_remote_span_context(remote)).is_err() {
                return;
            }
        }
        let cx = span.context();
        let exported = cx.span().span_context().clone();
        if exported.is_valid() {
            self.trace_id = exported.trace_id().to_string();
            self.span_id = exported.span_id().to_string();
            self.sampled = exported.is_sampled();
        }
    }

    /// The `traceparent` naming this gateway's span as the parent.
    pub fn traceparent(&self) -> String {
        format!("00-{}-{}-{:02x}", self.trace_id, self.span_id, u8::from(self.sampled))
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
        if let Ok(v) = context.traceparent().parse() {
            metadata.insert(TRACEPARENT, v);
        }
    }
    request
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn traceparents_parse_strictly() {
        let good = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let parsed = Some(("4bf92f3577b34da6a3ce929d0e0e4736".into(), "00f067aa0ba902b7".into(), true));
        assert_eq!(parse_traceparent(good), parsed);
        for bad in [
            "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-xx",
        ] {
            assert_eq!(parse_traceparent(bad), None, "{bad}");
        }
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
        assert_eq!((c.request_id.as_str(), c.trace_id.as_str()), ("req-42", "4bf92f3577b34da6a3ce929d0e0e4736"));
        assert!(
            c.traceparent().starts_with("00-4bf92f3577b34da6a3ce929d0e0e4736-") && c.traceparent().ends_with("-01")
        );
        assert_ne!(&c.traceparent()[36..52], "00f067aa0ba902b7", "the gateway's own span is the runner's parent");
        let fresh = RequestContext::from_headers(&HeaderMap::new());
        assert_eq!((fresh.trace_id.len(), fresh.span_id.len()), (32, 16));
    }
}
