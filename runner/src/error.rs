/// Everything the runner can fail with. Mapped once to `tonic::Status`.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0}")]
    InvalidRequest(String),
    /// The model's files are there but do not make a model this runner can serve.
    #[error("model {model} cannot be loaded: {reason}")]
    ModelInvalid { model: String, reason: String },
    #[error("model {model} needs {needed_mib} MiB but the runner's memory budget is {budget_mib} MiB")]
    TooLarge { model: String, needed_mib: u64, budget_mib: u64 },
    /// The bytes fetched for a file are not the ones its sha256 names. The message names no
    /// digest: it reaches callers, and a digest would tell them of an object they may not know.
    #[error("file {path} of {model} does not match its sha256")]
    DigestMismatch { model: String, path: String },
    /// A file whose object path is not the content address of its sha256 under the tenant the
    /// spec names (another tenant's, a staging or session object, a `..`): refused before
    /// anything is fetched.
    #[error("file {path} of {model} is not its tenant's stored file; nothing was fetched")]
    OutsideTenant { model: String, path: String },
    /// The object path, which the message leaves out, is in the source.
    #[error("fetching file {path} from the object store failed")]
    Fetch {
        path: String,
        #[source]
        source: object_store::Error,
    },
    #[error("model {0} is overloaded: its queue is full")]
    Overloaded(String),
    /// The budget is held by models serving requests (or pinned) for longer than a load waits.
    #[error("no room for model {0}: the runner's memory is held by busy or pinned models")]
    NoRoom(String),
    #[error("model {0} stopped while the request was queued")]
    WorkerGone(String),
    #[error("the call's deadline passed")]
    DeadlineExceeded,
    #[error("inference failed: {0}")]
    Inference(String),
    #[error("the GPU failed: {0}")]
    Device(String),
    /// Local I/O: the artifact cache's files, reading a model's files at admission and load,
    /// starting a model's thread.
    #[error("I/O on the runner's host failed (artifact cache, model files or model thread)")]
    Io(#[from] std::io::Error),
    /// Blocking work (file reads, hashing) panicked or was cancelled on tokio's blocking pool.
    #[error("{what} did not finish: its blocking task failed")]
    Interrupted {
        what: &'static str,
        #[source]
        source: tokio::task::JoinError,
    },
}

impl From<Error> for tonic::Status {
    fn from(e: Error) -> Self {
        e.status()
    }
}

impl Error {
    /// The gRPC status this error answers with; shared failed loads map through here too.
    pub fn status(&self) -> tonic::Status {
        use tonic::Status;
        let message = self.to_string();
        match self {
            Error::InvalidRequest(_) => Status::invalid_argument(message),
            Error::ModelInvalid { .. } | Error::TooLarge { .. } => Status::failed_precondition(message),
            Error::DigestMismatch { .. } => Status::data_loss(message),
            Error::OutsideTenant { .. } => Status::permission_denied(message),
            Error::Fetch { .. } | Error::WorkerGone(_) => Status::unavailable(message),
            Error::Overloaded(_) | Error::NoRoom(_) => Status::resource_exhausted(message),
            Error::DeadlineExceeded => Status::deadline_exceeded(message),
            Error::Inference(_) | Error::Device(_) | Error::Io(_) | Error::Interrupted { .. } => {
                Status::internal(message)
            }
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
