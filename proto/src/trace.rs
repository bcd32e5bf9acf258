//! The W3C trace context (`traceparent`, `tracestate`) a request carries: read and written by
//! OpenTelemetry's `TraceContextPropagator` only, here, for both sides of the gRPC hop (the
//! gateway injects its request's span into a call's metadata, the runner extracts it as its
//! call's parent) and for the gateway's HTTP headers (through its own carrier).

use opentelemetry::Context;
use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator as _};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use tonic::metadata::{MetadataKey, MetadataMap, MetadataValue};

/// The trace context `carrier` holds, as a parent: an empty context when it holds none, or
/// one that is not well-formed W3C trace context.
pub fn extract(carrier: &dyn Extractor) -> Context {
    TraceContextPropagator::new().extract(carrier)
}

/// Writes the span context of `cx` into `carrier` (nothing when it has none).
pub fn inject(cx: &Context, carrier: &mut dyn Injector) {
    TraceContextPropagator::new().inject_context(cx, carrier);
}

/// The trace context a call's metadata holds (see [`extract`]).
pub fn from_metadata(metadata: &MetadataMap) -> Context {
    extract(&MetadataExtractor(metadata))
}

/// Writes the span context of `cx` into a call's metadata (see [`inject`]).
pub fn to_metadata(cx: &Context, metadata: &mut MetadataMap) {
    inject(cx, &mut MetadataInjector(metadata));
}

/// A call's metadata as the propagator's carrier to write to.
pub struct MetadataInjector<'a>(pub &'a mut MetadataMap);

impl Injector for MetadataInjector<'_> {
    /// Keeps only values that make ASCII metadata, and no empty one (the propagator writes an
    /// empty `tracestate` when there is none).
    fn set(&mut self, key: &str, value: String) {
        if value.is_empty() {
            return;
        }
        if let (Ok(key), Ok(value)) = (MetadataKey::from_bytes(key.as_bytes()), MetadataValue::try_from(value)) {
            self.0.insert(key, value);
        }
    }
}

/// A call's metadata as the propagator's carrier to read from.
pub struct MetadataExtractor<'a>(pub &'a MetadataMap);

impl Extractor for MetadataExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|value| value.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0
            .keys()
            .filter_map(|key| match key {
                tonic::metadata::KeyRef::Ascii(key) => Some(key.as_str()),
                tonic::metadata::KeyRef::Binary(_) => None,
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use opentelemetry::trace::{SpanContext, SpanId, TraceContextExt as _, TraceFlags, TraceId, TraceState};

    use super::*;

    #[test]
    fn a_span_context_crosses_call_metadata_whole() {
        let trace_state = TraceState::from_key_value([("vendor", "opaque")]).expect("trace state");
        let sent = SpanContext::new(
            TraceId::from_hex("4bf92f3577b34da6a3ce929d0e0e4736").expect("trace id"),
            SpanId::from_hex("00f067aa0ba902b7").expect("span id"),
            TraceFlags::SAMPLED,
            false,
            trace_state,
        );
        let mut metadata = MetadataMap::new();
        to_metadata(&Context::new().with_remote_span_context(sent.clone()), &mut metadata);
        assert_eq!(
            metadata.get("traceparent").and_then(|v| v.to_str().ok()),
            Some("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
        );
        let received = from_metadata(&metadata);
        let received = received.span().span_context().clone();
        assert!(received.is_remote());
        assert_eq!(
            (received.trace_id(), received.span_id(), received.trace_flags(), received.trace_state()),
            (sent.trace_id(), sent.span_id(), sent.trace_flags(), sent.trace_state())
        );
    }

    #[test]
    fn metadata_without_a_well_formed_traceparent_gives_no_parent() {
        let mut metadata = MetadataMap::new();
        assert!(!from_metadata(&metadata).has_active_span());
        metadata
            .insert("traceparent", "00-00000000000000000000000000000000-00f067aa0ba902b7-01".parse().expect("ascii"));
        assert!(!from_metadata(&metadata).span().span_context().is_valid());
        let mut none = MetadataMap::new();
        to_metadata(&Context::new(), &mut none);
        assert!(none.is_empty(), "no span, nothing written: {none:?}");
    }
}
