//! The runner's Prometheus metrics (the process serves them on `metrics.listen`; names are
//! listed in docs/OPERATIONS.md). `model` is the version's display name, `tenant/model@N`.

use std::sync::LazyLock;

use prometheus::{
    HistogramVec, IntCounter, IntCounterVec, IntGauge, register_histogram_vec, register_int_counter,
    register_int_counter_vec, register_int_gauge,
};

const SECONDS: &[f64] = &[0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0, 30.0];

macro_rules! metric {
    ($register:ident, $name:literal, $help:literal $(, $labels:expr)? $(; $buckets:expr)?) => {
        LazyLock::new(|| {
            $register!($name, $help $(, $labels)? $(, $buckets.to_vec())?)
                .expect(concat!($name, " is registered once (a bug otherwise)"))
        })
    };
}

pub static QUEUE_DURATION: LazyLock<HistogramVec> = metric!(
    register_histogram_vec,
    "modelgate_runner_queue_duration_seconds",
    "Time a request waited in its model's queue before its batch ran, by model.",
    &["model"]; SECONDS
);

pub static COMPUTE_DURATION: LazyLock<HistogramVec> = metric!(
    register_histogram_vec,
    "modelgate_runner_compute_duration_seconds",
    "Time of one forward batch (or one whole generation), by model.",
    &["model"]; SECONDS
);

pub static BATCH_SIZE: LazyLock<HistogramVec> = metric!(
    register_histogram_vec,
    "modelgate_runner_batch_inputs",
    "Inputs per embedding or classification batch, by model.",
    &["model"]; &[1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0]
);

pub static REJECTED: LazyLock<IntCounterVec> = metric!(
    register_int_counter_vec,
    "modelgate_runner_rejected_total",
    "Requests refused at once because the model's queue was full (RESOURCE_EXHAUSTED), by model.",
    &["model"]
);

pub static LOAD_DURATION: LazyLock<HistogramVec> = metric!(
    register_histogram_vec,
    "modelgate_runner_model_load_duration_seconds",
    "Time to fetch (or find in the disk cache) and load a model version, by model.",
    &["model"]; &[0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 180.0]
);

pub static LOAD_FAILURES: LazyLock<IntCounterVec> = metric!(
    register_int_counter_vec,
    "modelgate_runner_model_load_failures_total",
    "Loads that failed (bad files, too large for the budget, the store unreachable), by model.",
    &["model"]
);

pub static CACHE_HITS: LazyLock<IntCounter> =
    metric!(register_int_counter, "modelgate_runner_cache_hits_total", "Requests whose model was loaded already.");

pub static CACHE_MISSES: LazyLock<IntCounter> =
    metric!(register_int_counter, "modelgate_runner_cache_misses_total", "Requests that had to wait for a load.");

pub static CACHE_EVICTIONS: LazyLock<IntCounter> = metric!(
    register_int_counter,
    "modelgate_runner_cache_evictions_total",
    "Idle models unloaded to make room for another."
);

pub static MEMORY_USED: LazyLock<IntGauge> = metric!(
    register_int_gauge,
    "modelgate_runner_memory_used_bytes",
    "Memory the loaded models take (device memory under CUDA, tensor bytes on CPU)."
);

pub static MEMORY_BUDGET: LazyLock<IntGauge> =
    metric!(register_int_gauge, "modelgate_runner_memory_budget_bytes", "The memory budget the models are kept under.");
