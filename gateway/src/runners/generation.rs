//! A generation's chunks, as the gateway hands them on. gRPC deadlines cover a call until its
//! answer starts, not a server stream to its end, so the gateway keeps the clock itself: past
//! the deadline the stream answers 504 once and drops the runner's stream, which stops the
//! generation at its next token and releases the model's lease. And a runner that dies while
//! it streams is judged as for any call lost in flight ([`super::containment`]): the
//! generation counts as outstanding on its runner until its stream ends.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use futures::stream::BoxStream;
use futures::{Stream, StreamExt as _};
use proto::v1::GenerateChunk;

use super::RunnerPool;
use super::containment;
use super::member::{Member, Outstanding, is_connection_failure};
use crate::error::ApiError;

pub struct Generation {
    chunks: BoxStream<'static, Result<GenerateChunk, ApiError>>,
}

/// What the stream carries from one chunk to the next.
struct Flow {
    chunks: tonic::Streaming<GenerateChunk>,
    deadline: Pin<Box<tokio::time::Sleep>>,
    limit: Duration,
    pool: RunnerPool,
    member: Arc<Member>,
    version_id: String,
    /// Holds the generation among its runner's outstanding calls while it streams.
    _counted: Outstanding,
}

impl Generation {
    /// `chunks` of `version_id` from `member`, which may run for `limit` from now.
    pub(super) fn new(
        chunks: tonic::Streaming<GenerateChunk>,
        limit: Duration,
        pool: RunnerPool,
        member: Arc<Member>,
        version_id: String,
    ) -> Self {
        let _counted = Outstanding::start(&member, &version_id);
        let deadline = Box::pin(tokio::time::sleep(limit));
        let flow = Flow { chunks, deadline, limit, pool, member, version_id, _counted };
        let chunks = futures::stream::unfold(Some(flow), |flow| async move {
            let mut flow = flow?;
            let next = tokio::select! {
                next = flow.chunks.next() => next,
                () = &mut flow.deadline => {
                    let message = format!("the generation did not finish within {} ms", flow.limit.as_millis());
                    return Some((Err(tonic::Status::deadline_exceeded(message).into()), None));
                }
            };
            match next? {
                Ok(chunk) => Some((Ok(chunk), Some(flow))),
                Err(status) if is_connection_failure(&status) && !containment::never_reached(&status) => {
                    let error = flow.pool.lost(&flow.member, &flow.version_id, status).await;
                    Some((Err(error), None))
                }
                Err(status) => Some((Err(status.into()), None)),
            }
        });
        // Fused: an answer's stream may be polled once more after its end.
        Self { chunks: chunks.fuse().boxed() }
    }
}

impl Stream for Generation {
    type Item = Result<GenerateChunk, ApiError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.chunks.poll_next_unpin(cx)
    }
}
