//! One OS thread per loaded model. The model is built on that thread and never leaves it;
//! requests reach it through a bounded queue and are drained into batches.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, SyncSender, TrySendError};
use std::time::Instant;

use tokio::sync::oneshot;

use crate::device::Placement;
use crate::error::{Error, Result};
use crate::metrics;
use crate::models::{Admitted, Embedded, GenerateParams, LoadedModel, ModelFiles, Piece};
use crate::template::Renderer;

enum Job {
    Embed {
        inputs: Vec<String>,
        reply: oneshot::Sender<Result<Vec<Embedded>>>,
        queued: Queued,
    },
    /// Pieces go out as they are made; a closed channel (the client left) stops the work.
    Generate {
        params: Box<GenerateParams>,
        pieces: tokio::sync::mpsc::Sender<Result<Piece>>,
        queued: Queued,
    },
}

/// A request's wait in the queue: since when, and a `queue` span under the caller's (the
/// runner's `rpc` span), which ends when the request starts to run.
struct Queued {
    at: Instant,
    caller: tracing::Span,
    span: tracing::Span,
}

impl Queued {
    fn now() -> Self {
        Self { at: Instant::now(), caller: tracing::Span::current(), span: tracing::info_span!("queue") }
    }

    /// Ends the wait; answers the `compute` span, under the caller's, that the work runs in
    /// (a batch has one per request, since each request has its own trace).
    fn start(self, requests: usize, inputs: usize) -> tracing::Span {
        drop(self.span);
        tracing::info_span!(parent: &self.caller, "compute", batch.requests = requests, batch.inputs = inputs)
    }
}

/// Limits of one model's queue and batches.
#[derive(Debug, Clone, Copy)]
pub struct BatchLimits {
    /// Requests waiting beyond this are refused (RESOURCE_EXHAUSTED) instead of queued.
    pub queue_depth: usize,
    /// Inputs run in one batch at most.
    pub max_batch_inputs: usize,
    /// Tokens (of all its inputs, before padding) in one batch at most; a single request
    /// over it still runs, alone.
    pub max_batch_tokens: usize,
    /// How long a batch may wait for more requests once one arrives (0: it takes only what
    /// is already queued).
    pub max_batch_wait: std::time::Duration,
}

/// What a model's thread has done, for the runner's status.
#[derive(Debug, Default)]
pub struct WorkerStats {
    pub load_ms: AtomicU64,
    pub requests: AtomicU64,
    pub inputs: AtomicU64,
    pub batches: AtomicU64,
    pub queue_us: AtomicU64,
    pub compute_us: AtomicU64,
}

impl WorkerStats {
    fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }
}

/// A handle to a loaded model. Dropping the last handle stops its thread once the queue is empty.
pub struct ModelWorker {
    pub display_name: String,
    pub memory_bytes: u64,
    /// For a classifier: the labels its scores are for.
    pub labels: Option<Vec<String>>,
    pub stats: Arc<WorkerStats>,
    queue: SyncSender<Job>,
}

impl ModelWorker {
    /// Starts the model's thread and waits (without blocking the runtime) until it has loaded.
    pub async fn start(
        display_name: String,
        task: String,
        files: ModelFiles,
        placement: Placement,
        limits: BatchLimits,
        admitted: Admitted,
        renderer: Renderer,
    ) -> Result<Self> {
        let (queue, jobs) = mpsc::sync_channel::<Job>(limits.queue_depth);
        let (loaded_tx, loaded_rx) = oneshot::channel::<Result<(u64, Option<Vec<String>>)>>();
        let name = display_name.clone();
        let stats = Arc::new(WorkerStats::default());
        let thread_stats = stats.clone();
        std::thread::Builder::new().name(format!("model {display_name}")).spawn(move || {
            let started = Instant::now();
            // A loader that panics on weights it cannot use must not take the runner down.
            let loaded = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                LoadedModel::load(&task, &files, &placement, &admitted, &renderer)
            }))
            .unwrap_or_else(|_| Err(files.invalid("the weights do not match the config")));
            let mut model = match loaded {
                Ok((model, bytes)) => {
                    let load_ms = started.elapsed().as_millis() as u64;
                    thread_stats.load_ms.store(load_ms, Ordering::Relaxed);
                    tracing::info!(model.name = %name, memory_bytes = bytes, duration_ms = load_ms, "model loaded");
                    let _ = loaded_tx.send(Ok((bytes, model.labels())));
                    model
                }
                Err(e) => {
                    let _ = loaded_tx.send(Err(e));
                    return;
                }
            };
            serve(&name, &mut model, &jobs, limits, &thread_stats);
            tracing::info!(model.name = %name, "model unloaded");
        })?;
        let (memory_bytes, labels) = loaded_rx.await.map_err(|_| Error::WorkerGone(display_name.clone()))??;
        Ok(Self { display_name, memory_bytes, labels, stats, queue })
    }

    /// Queues inputs for the model; refuses at once when the queue is full.
    pub async fn embed(&self, inputs: Vec<String>) -> Result<Vec<Embedded>> {
        let (reply, answer) = oneshot::channel();
        self.enqueue(Job::Embed { inputs, reply, queued: Queued::now() })?;
        answer.await.map_err(|_| Error::WorkerGone(self.display_name.clone()))?
    }

    /// Queues a generation; its pieces arrive on the returned channel. Dropping the receiver
    /// stops the generation at its next token.
    pub fn generate(&self, params: GenerateParams) -> Result<tokio::sync::mpsc::Receiver<Result<Piece>>> {
        let (pieces, receiver) = tokio::sync::mpsc::channel(64);
        self.enqueue(Job::Generate { params: Box::new(params), pieces, queued: Queued::now() })?;
        Ok(receiver)
    }

    fn enqueue(&self, job: Job) -> Result<()> {
        match self.queue.try_send(job) {
            Ok(()) => Ok(()),
            Err(TrySendError::Full(_)) => {
                metrics::REJECTED.with_label_values(&[self.display_name.as_str()]).inc();
                Err(Error::Overloaded(self.display_name.clone()))
            }
            Err(TrySendError::Disconnected(_)) => Err(Error::WorkerGone(self.display_name.clone())),
        }
    }
}

fn serve(name: &str, model: &mut LoadedModel, jobs: &Receiver<Job>, limits: BatchLimits, stats: &WorkerStats) {
    // A request that did not fit the last batch starts the next one.
    let mut held: Option<Job> = None;
    while let Some(first) = held.take().or_else(|| jobs.recv().ok()) {
        let (inputs, reply, queued) = match first {
            Job::Embed { inputs, reply, queued } => (inputs, reply, queued),
            Job::Generate { params, pieces, queued } => {
                let _compute = queued.start(1, 1);
                generate(name, model, &params, &pieces, stats);
                continue;
            }
        };
        // Take the embeddings queued meanwhile, up to the batch limits, waiting at most
        // `max_batch_wait` for more. A generation met on the way runs after the batch.
        let deadline = Instant::now() + limits.max_batch_wait;
        let mut count = inputs.len();
        let mut tokens = model.count_tokens(&inputs);
        let mut batch = vec![(inputs, reply, queued)];
        while count < limits.max_batch_inputs && tokens < limits.max_batch_tokens && held.is_none() {
            let next = match deadline.checked_duration_since(Instant::now()) {
                Some(left) if !left.is_zero() => jobs.recv_timeout(left).ok(),
                _ => jobs.try_recv().ok(),
            };
            match next {
                Some(Job::Embed { inputs, reply, queued }) => {
                    let more = model.count_tokens(&inputs);
                    if count + inputs.len() > limits.max_batch_inputs || tokens + more > limits.max_batch_tokens {
                        held = Some(Job::Embed { inputs, reply, queued });
                    } else {
                        count += inputs.len();
                        tokens += more;
                        batch.push((inputs, reply, queued));
                    }
                }
                Some(generation @ Job::Generate { .. }) => held = Some(generation),
                None => break,
            }
        }
        let started = Instant::now();
        let requests = batch.len();
        let mut compute = Vec::with_capacity(requests);
        let batch = batch
            .into_iter()
            .map(|(inputs, reply, queued)| {
                let waited = started.duration_since(queued.at);
                WorkerStats::add(&stats.queue_us, waited.as_micros() as u64);
                metrics::QUEUE_DURATION.with_label_values(&[name]).observe(waited.as_secs_f64());
                compute.push(queued.start(requests, count));
                (inputs, reply)
            })
            .collect();
        embed_batch(name, model, batch, stats);
        drop(compute);
    }
}

/// Embedding requests drained into one batch: each one's inputs and where its answer goes.
type EmbedBatch = Vec<(Vec<String>, oneshot::Sender<Result<Vec<Embedded>>>)>;

fn embed_batch(name: &str, model: &LoadedModel, mut batch: EmbedBatch, stats: &WorkerStats) {
    // A caller that went away needs no answer.
    batch.retain(|(_, reply)| !reply.is_closed());
    if batch.is_empty() {
        return;
    }
    let texts: Vec<&str> = batch.iter().flat_map(|(inputs, _)| inputs.iter().map(String::as_str)).collect();
    let started = Instant::now();
    let result = model.embed(&texts);
    WorkerStats::add(&stats.compute_us, started.elapsed().as_micros() as u64);
    WorkerStats::add(&stats.batches, 1);
    metrics::COMPUTE_DURATION.with_label_values(&[name]).observe(started.elapsed().as_secs_f64());
    metrics::BATCH_SIZE.with_label_values(&[name]).observe(texts.len() as f64);
    WorkerStats::add(&stats.requests, batch.len() as u64);
    WorkerStats::add(&stats.inputs, texts.len() as u64);
    tracing::debug!(model.name = %name, batch.requests = batch.len(), batch.inputs = texts.len(), duration_ms = started.elapsed().as_millis() as u64, "batch done");
    match result {
        Ok(mut all) => {
            for (inputs, reply) in batch.into_iter().rev() {
                let mine = all.split_off(all.len() - inputs.len());
                let _ = reply.send(Ok(mine));
            }
        }
        Err(e) => {
            let message = e.to_string();
            for (_, reply) in batch {
                let _ = reply.send(Err(Error::Inference(message.clone())));
            }
        }
    }
}

fn generate(
    name: &str,
    model: &mut LoadedModel,
    params: &GenerateParams,
    pieces: &tokio::sync::mpsc::Sender<Result<Piece>>,
    stats: &WorkerStats,
) {
    if pieces.is_closed() {
        return;
    }
    let started = Instant::now();
    let mut tokens = 0;
    let result = model.generate(params, |piece| {
        tokens = piece.completion_tokens;
        pieces.blocking_send(Ok(piece)).is_ok()
    });
    WorkerStats::add(&stats.compute_us, started.elapsed().as_micros() as u64);
    WorkerStats::add(&stats.requests, 1);
    metrics::COMPUTE_DURATION.with_label_values(&[name]).observe(started.elapsed().as_secs_f64());
    tracing::debug!(model.name = %name, tokens, duration_ms = started.elapsed().as_millis() as u64, "generation done");
    if let Err(e) = result {
        let _ = pieces.blocking_send(Err(e));
    }
}
