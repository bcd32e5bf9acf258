//! One OS thread per loaded model. The model is built on that thread and never leaves it;
//! requests reach it through a bounded queue and are drained into batches.

use std::sync::mpsc::{self, Receiver, SyncSender, TrySendError};
use std::time::Instant;

use candle_core::Device;
use tokio::sync::oneshot;

use crate::error::{Error, Result};
use crate::models::{Embedded, LoadedModel, ModelFiles};

struct Job {
    inputs: Vec<String>,
    reply: oneshot::Sender<Result<Vec<Embedded>>>,
}

/// Limits of one model's queue and batches.
#[derive(Debug, Clone, Copy)]
pub struct BatchLimits {
    /// Requests waiting beyond this are refused (RESOURCE_EXHAUSTED) instead of queued.
    pub queue_depth: usize,
    /// Inputs run in one batch at most.
    pub max_batch_inputs: usize,
}

/// A handle to a loaded model. Dropping the last handle stops its thread once the queue is empty.
pub struct ModelWorker {
    pub display_name: String,
    pub memory_bytes: u64,
    queue: SyncSender<Job>,
}

impl ModelWorker {
    /// Starts the model's thread and waits (without blocking the runtime) until it has loaded.
    pub async fn start(
        display_name: String,
        task: String,
        files: ModelFiles,
        device: Device,
        limits: BatchLimits,
    ) -> Result<Self> {
        let (queue, jobs) = mpsc::sync_channel::<Job>(limits.queue_depth);
        let (loaded_tx, loaded_rx) = oneshot::channel::<Result<u64>>();
        let name = display_name.clone();
        std::thread::Builder::new()
            .name(format!("model {display_name}"))
            .spawn(move || {
                let started = Instant::now();
                let model = match LoadedModel::load(&task, &files, &device) {
                    Ok((model, bytes)) => {
                        tracing::info!(model.name = %name, memory_bytes = bytes, duration_ms = started.elapsed().as_millis() as u64, "model loaded");
                        let _ = loaded_tx.send(Ok(bytes));
                        model
                    }
                    Err(e) => {
                        let _ = loaded_tx.send(Err(e));
                        return;
                    }
                };
                serve(&name, &model, &jobs, limits.max_batch_inputs);
                tracing::info!(model.name = %name, "model unloaded");
            })?;
        let memory_bytes = loaded_rx.await.map_err(|_| Error::WorkerGone(display_name.clone()))??;
        Ok(Self { display_name, memory_bytes, queue })
    }

    /// Queues inputs for the model; refuses at once when the queue is full.
    pub async fn embed(&self, inputs: Vec<String>) -> Result<Vec<Embedded>> {
        let (reply, answer) = oneshot::channel();
        match self.queue.try_send(Job { inputs, reply }) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => return Err(Error::Overloaded(self.display_name.clone())),
            Err(TrySendError::Disconnected(_)) => {
                return Err(Error::WorkerGone(self.display_name.clone()));
            }
        }
        answer.await.map_err(|_| Error::WorkerGone(self.display_name.clone()))?
    }
}

fn serve(name: &str, model: &LoadedModel, jobs: &Receiver<Job>, max_batch_inputs: usize) {
    while let Ok(first) = jobs.recv() {
        // Take what is already waiting, up to the batch limit: a batch forms without added wait.
        let mut batch = vec![first];
        let mut inputs = batch[0].inputs.len();
        while inputs < max_batch_inputs {
            match jobs.try_recv() {
                Ok(job) => {
                    inputs += job.inputs.len();
                    batch.push(job);
                }
                Err(_) => break,
            }
        }
        // A caller that went away needs no answer.
        batch.retain(|job| !job.reply.is_closed());
        if batch.is_empty() {
            continue;
        }
        let texts: Vec<&str> = batch.iter().flat_map(|j| j.inputs.iter().map(String::as_str)).collect();
        let started = Instant::now();
        let result = model.embed(&texts);
        tracing::debug!(model.name = %name, batch.requests = batch.len(), batch.inputs = texts.len(), duration_ms = started.elapsed().as_millis() as u64, "batch done");
        match result {
            Ok(mut all) => {
                for job in batch.into_iter().rev() {
                    let mine = all.split_off(all.len() - job.inputs.len());
                    let _ = job.reply.send(Ok(mine));
                }
            }
            Err(e) => {
                let message = e.to_string();
                for job in batch {
                    let _ = job.reply.send(Err(Error::Inference(message.clone())));
                }
            }
        }
    }
}
