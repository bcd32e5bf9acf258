//! A generation's chunks, ended at the call's deadline. gRPC deadlines cover a call until its
//! answer starts, not a server stream to its end, so the gateway keeps the clock itself: past
//! the deadline the stream yields DEADLINE_EXCEEDED (504) once and drops the runner's stream,
//! which stops the generation at its next token and releases the model's lease.

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use futures::Stream;
use proto::v1::GenerateChunk;

pub struct Generation {
    chunks: Option<tonic::Streaming<GenerateChunk>>,
    deadline: Pin<Box<tokio::time::Sleep>>,
    limit: Duration,
}

impl Generation {
    /// `chunks` may run for `limit` from now.
    pub(super) fn new(chunks: tonic::Streaming<GenerateChunk>, limit: Duration) -> Self {
        Self { chunks: Some(chunks), deadline: Box::pin(tokio::time::sleep(limit)), limit }
    }
}

impl Stream for Generation {
    type Item = Result<GenerateChunk, tonic::Status>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let Some(chunks) = self.chunks.as_mut() else { return Poll::Ready(None) };
        if let Poll::Ready(item) = Pin::new(chunks).poll_next(cx) {
            return Poll::Ready(item);
        }
        if self.deadline.as_mut().poll(cx).is_ready() {
            self.chunks = None;
            let message = format!("the generation did not finish within {} ms", self.limit.as_millis());
            return Poll::Ready(Some(Err(tonic::Status::deadline_exceeded(message))));
        }
        Poll::Pending
    }
}
