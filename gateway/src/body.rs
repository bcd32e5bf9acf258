//! Request bodies a caller sends: none may hold the gateway's memory or a connection for free.
//!
//! - A request body (an upload, a JSON body, a form) that sends nothing for
//!   `body_idle_timeout_secs` ends with 408 `body_timeout`, and what it had sent is dropped.
//! - A resumable chunk is held whole before it goes to the store (an object store takes a part
//!   in one request), so chunks being received draw their size from a budget of
//!   `chunk_buffer_mib`, of which one tenant takes at most a quarter; past it, 429 with
//!   `Retry-After` before any byte is read.
//! - An answer sent before the request's body was read to its end closes the connection, so
//!   the rest of the body is neither read nor left waiting on a connection that stays open.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use actix_web::HttpMessage as _;
use actix_web::dev::{Payload, ServiceRequest, ServiceResponse};
use actix_web::error::PayloadError;
use actix_web::http::ConnectionType;
use actix_web::http::header::{self, HeaderMap};
use bytes::Bytes;
use futures::{Stream, StreamExt as _};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::error::{ApiError, ErrorCode};

const MIB: u64 = 1024 * 1024;

/// Why a body that stopped sending was ended (inside the `TimedOut` I/O error its reader gets).
#[derive(Debug, thiserror::Error)]
#[error("the request body sent nothing for {} s; it was ended", .0.as_secs())]
pub struct BodyIdle(Duration);

/// Whether a request's body was read to its end, as [`idle_timeout`] saw it.
#[derive(Clone, Default)]
pub struct Drained(Arc<AtomicBool>);

impl Drained {
    pub fn get(&self) -> bool {
        self.0.load(Ordering::Acquire)
    }
}

/// Makes every read of the request's body end with a `TimedOut` I/O error carrying
/// [`BodyIdle`] when no byte arrives for `idle`, whoever reads it (an upload, a JSON extractor,
/// a form): a body that stalls holds neither its buffer nor its connection. Answers whether
/// the body will have been read to its end.
pub fn idle_timeout(req: &mut ServiceRequest, idle: Duration) -> Drained {
    let drained = Drained::default();
    let flag = drained.0.clone();
    let payload = req.take_payload();
    let timed = futures::stream::unfold(Some(payload), move |payload| {
        let flag = flag.clone();
        async move {
            let mut payload = payload?;
            match tokio::time::timeout(idle, payload.next()).await {
                Ok(Some(Ok(bytes))) => Some((Ok(bytes), Some(payload))),
                Ok(Some(Err(e))) => Some((Err(e), None)),
                Ok(None) => {
                    flag.store(true, Ordering::Release);
                    None
                }
                Err(_) => {
                    let stalled = std::io::Error::new(std::io::ErrorKind::TimedOut, BodyIdle(idle));
                    Some((Err(PayloadError::Io(stalled)), None))
                }
            }
        }
    });
    // Fused: a reader (actix-multipart's, for one) may ask again after the end, and `unfold`
    // panics when it is polled past its end.
    let timed: Pin<Box<dyn Stream<Item = Result<Bytes, PayloadError>>>> = Box::pin(timed.fuse());
    req.set_payload(Payload::from(timed));
    drained
}

/// The stall, when reading a body failed because it stopped sending.
pub fn idle_of(e: &PayloadError) -> Option<&BodyIdle> {
    match e {
        PayloadError::Io(io) if io.kind() == std::io::ErrorKind::TimedOut => {
            io.get_ref().and_then(|inner| inner.downcast_ref::<BodyIdle>())
        }
        _ => None,
    }
}

/// 408 `body_timeout`, for a body that stopped sending.
pub fn body_timeout(idle: &BodyIdle) -> ApiError {
    ApiError::new(ErrorCode::BodyTimeout, idle.to_string())
}

/// A registry error from reading an upload body as the caller should see it: a stalled body
/// is 408 `body_timeout`, everything else as usual.
pub fn upload_error(e: registry::Error) -> ApiError {
    if let registry::Error::Upload(source) = &e
        && let Some(idle) = source.downcast_ref::<PayloadError>().and_then(idle_of)
    {
        return body_timeout(idle);
    }
    e.into()
}

/// What bounds upload bodies; one per gateway.
pub struct BodyLimits {
    pub idle: Duration,
    chunks: Arc<Semaphore>,
    /// Bytes of chunks being received, per tenant id (entries leave at zero).
    per_tenant: Arc<Mutex<HashMap<String, u64>>>,
    tenant_share: u64,
}

/// Room for one chunk in the budget, given back when dropped.
pub struct ChunkRoom {
    _permit: OwnedSemaphorePermit,
    per_tenant: Arc<Mutex<HashMap<String, u64>>>,
    tenant_id: String,
    bytes: u64,
}

impl Drop for ChunkRoom {
    fn drop(&mut self) {
        let mut per_tenant = self.per_tenant.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(held) = per_tenant.get_mut(&self.tenant_id) {
            *held = held.saturating_sub(self.bytes);
            if *held == 0 {
                per_tenant.remove(&self.tenant_id);
            }
        }
    }
}

impl BodyLimits {
    pub fn new(idle: Duration, chunk_buffer_mib: u64) -> Self {
        let mib = chunk_buffer_mib.clamp(64, u64::from(u32::MAX >> 1));
        let permits = usize::try_from(mib).unwrap_or(usize::MAX >> 1);
        Self {
            idle,
            chunks: Arc::new(Semaphore::new(permits)),
            per_tenant: Arc::default(),
            tenant_share: (mib / 4).max(64) * MIB,
        }
    }

    /// Room for a chunk of `bytes` of the tenant `tenant_id`, or 429 when chunks being
    /// received hold the budget (or the tenant's share of it).
    pub fn chunk_room(&self, tenant_id: &str, bytes: u64) -> Result<ChunkRoom, ApiError> {
        let busy = || {
            ApiError::new(
                ErrorCode::TooManyChunks,
                "too many chunks are being received at once; send this one again shortly, or fewer in parallel",
            )
            .retry_after(1)
        };
        let mut per_tenant = self.per_tenant.lock().unwrap_or_else(PoisonError::into_inner);
        let held = per_tenant.get(tenant_id).copied().unwrap_or(0);
        if held + bytes > self.tenant_share {
            return Err(busy());
        }
        let mib = u32::try_from(bytes.div_ceil(MIB).max(1)).map_err(|_| busy())?;
        let permit = self.chunks.clone().try_acquire_many_owned(mib).map_err(|_| busy())?;
        per_tenant.insert(tenant_id.to_owned(), held + bytes);
        Ok(ChunkRoom { _permit: permit, per_tenant: self.per_tenant.clone(), tenant_id: tenant_id.to_owned(), bytes })
    }
}

/// Whether the request comes with a body (a length above zero, or chunked).
pub fn has_body(headers: &HeaderMap) -> bool {
    if headers.contains_key(header::TRANSFER_ENCODING) {
        return true;
    }
    match headers.get(header::CONTENT_LENGTH) {
        None => false,
        Some(length) => length.to_str().ok().and_then(|v| v.trim().parse::<u64>().ok()) != Some(0),
    }
}

/// An answer sent before the request's body was read to its end (refused by its headers, its
/// length, its credential; a stalled body) closes the connection: the rest of the body is
/// neither read nor left in a connection kept alive.
pub fn close_if_answered_early<B>(had_body: bool, drained: &Drained, res: &mut ServiceResponse<B>) {
    if had_body && !drained.get() {
        res.response_mut().head_mut().set_connection_type(ConnectionType::Close);
    }
}

#[cfg(test)]
mod tests {
    use actix_web::http::StatusCode;
    use actix_web::http::header::{HeaderName, HeaderValue};

    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.insert(HeaderName::from_static(name), HeaderValue::from_static(value));
        }
        map
    }

    #[test]
    fn a_body_is_a_length_above_zero_or_chunked() {
        assert!(has_body(&headers(&[("content-length", "10")])));
        assert!(has_body(&headers(&[("transfer-encoding", "chunked")])));
        assert!(has_body(&headers(&[("content-length", "x")])), "an unreadable length may hide a body");
        assert!(!has_body(&headers(&[("content-length", "0")])));
        assert!(!has_body(&headers(&[])));
    }

    #[test]
    fn chunks_share_the_budget_and_one_tenant_takes_a_quarter() {
        let limits = BodyLimits::new(Duration::from_secs(1), 256);
        let a: Vec<ChunkRoom> = (0..4).map(|_| limits.chunk_room("a", 16 * MIB).expect("room")).collect();
        let refused = limits.chunk_room("a", MIB).err().expect("past a's quarter");
        assert_eq!((refused.status(), refused.code()), (StatusCode::TOO_MANY_REQUESTS, ErrorCode::TooManyChunks));
        let others: Vec<ChunkRoom> =
            ["b", "c", "d"].iter().map(|t| limits.chunk_room(t, 64 * MIB).expect("room")).collect();
        assert!(limits.chunk_room("e", MIB).is_err(), "the budget is full");
        drop(a);
        assert!(limits.chunk_room("a", 64 * MIB).is_ok(), "dropped rooms are given back");
        drop(others);
        assert!(limits.per_tenant.lock().expect("unpoisoned").len() <= 1, "tenants at zero are forgotten");
    }

    /// Found by the dashboard's browser test: actix-multipart reads the payload once more
    /// after its end, which panicked the worker.
    #[actix_web::test]
    async fn a_timed_body_may_be_read_past_its_end() {
        let mut req = actix_web::test::TestRequest::default().set_payload("a body").to_srv_request();
        let drained = idle_timeout(&mut req, Duration::from_secs(5));
        let mut payload = req.take_payload();
        let mut read = Vec::new();
        while let Some(bytes) = payload.next().await {
            read.extend_from_slice(&bytes.expect("bytes"));
        }
        assert_eq!(read, b"a body");
        assert!(payload.next().await.is_none(), "past its end, a body stays ended");
        assert!(drained.0.load(Ordering::Acquire), "read to its end");
    }
}
