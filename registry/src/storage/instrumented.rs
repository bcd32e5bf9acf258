//! Every object-store call timed into `modelgate_object_store_request_duration_seconds`,
//! by operation and outcome. A get is timed to its headers (the body streams on); list
//! streams and deletes pass through untimed.

use std::ops::Range;
use std::sync::{Arc, LazyLock};
use std::time::Instant;

use bytes::Bytes;
use futures::stream::BoxStream;
use object_store::path::Path;
use object_store::{
    CopyOptions, GetOptions, GetResult, ListResult, MultipartUpload, ObjectMeta, ObjectStore, PutMultipartOptions,
    PutOptions, PutPayload, PutResult, RenameOptions, Result,
};
use prometheus::{HistogramVec, register_histogram_vec};

static DURATION: LazyLock<HistogramVec> = LazyLock::new(|| {
    register_histogram_vec!(
        "modelgate_object_store_request_duration_seconds",
        "Object-store calls by operation (put, put_multipart, get, get_ranges, list, copy, rename) and outcome.",
        &["op", "outcome"],
        vec![0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0]
    )
    .expect("the object-store histogram is registered once (a bug otherwise)")
});

fn observe<T>(op: &str, started: Instant, result: &Result<T>) {
    let outcome = match result {
        Ok(_) => "ok",
        Err(object_store::Error::NotFound { .. }) => "not_found",
        Err(_) => "error",
    };
    DURATION.with_label_values(&[op, outcome]).observe(started.elapsed().as_secs_f64());
}

#[derive(Debug)]
pub(crate) struct Instrumented(pub Arc<dyn ObjectStore>);

impl std::fmt::Display for Instrumented {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

#[async_trait::async_trait]
impl ObjectStore for Instrumented {
    async fn put_opts(&self, location: &Path, payload: PutPayload, opts: PutOptions) -> Result<PutResult> {
        let started = Instant::now();
        let result = self.0.put_opts(location, payload, opts).await;
        observe("put", started, &result);
        result
    }

    async fn put_multipart_opts(&self, location: &Path, opts: PutMultipartOptions) -> Result<Box<dyn MultipartUpload>> {
        let started = Instant::now();
        let result = self.0.put_multipart_opts(location, opts).await;
        observe("put_multipart", started, &result);
        result
    }

    async fn get_opts(&self, location: &Path, options: GetOptions) -> Result<GetResult> {
        let started = Instant::now();
        let result = self.0.get_opts(location, options).await;
        observe("get", started, &result);
        result
    }

    async fn get_ranges(&self, location: &Path, ranges: &[Range<u64>]) -> Result<Vec<Bytes>> {
        let started = Instant::now();
        let result = self.0.get_ranges(location, ranges).await;
        observe("get_ranges", started, &result);
        result
    }

    fn delete_stream(&self, locations: BoxStream<'static, Result<Path>>) -> BoxStream<'static, Result<Path>> {
        self.0.delete_stream(locations)
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, Result<ObjectMeta>> {
        self.0.list(prefix)
    }

    fn list_with_offset(&self, prefix: Option<&Path>, offset: &Path) -> BoxStream<'static, Result<ObjectMeta>> {
        self.0.list_with_offset(prefix, offset)
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> Result<ListResult> {
        let started = Instant::now();
        let result = self.0.list_with_delimiter(prefix).await;
        observe("list", started, &result);
        result
    }

    async fn copy_opts(&self, from: &Path, to: &Path, options: CopyOptions) -> Result<()> {
        let started = Instant::now();
        let result = self.0.copy_opts(from, to, options).await;
        observe("copy", started, &result);
        result
    }

    async fn rename_opts(&self, from: &Path, to: &Path, options: RenameOptions) -> Result<()> {
        let started = Instant::now();
        let result = self.0.rename_opts(from, to, options).await;
        observe("rename", started, &result);
        result
    }
}
