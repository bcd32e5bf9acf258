//! One error type for every HTTP answer that is not a success, and one JSON envelope:
//! `{"error": {"code", "message", "type"}}` — the management API's shape and OpenAI's at once.

use actix_web::http::StatusCode;
use actix_web::http::header::{self, HeaderName, HeaderValue};
use actix_web::{HttpResponse, ResponseError};
use serde_json::{Value, json};

mod code;
pub use code::ErrorCode;

#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: ErrorCode,
    message: String,
    details: Option<Value>,
    headers: Vec<(HeaderName, HeaderValue)>,
    source: Option<Box<dyn std::error::Error + Send + Sync>>,
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({}): {}", self.status.as_u16(), self.code.as_str(), self.message)
    }
}

impl std::error::Error for ApiError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source.as_deref().map(|e| e as &(dyn std::error::Error + 'static))
    }
}

impl ApiError {
    /// An error answered with its code's status.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self { status: code.status(), code, message: message.into(), details: None, headers: Vec::new(), source: None }
    }

    /// 400 `invalid_request`: the request breaks a rule.
    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::InvalidRequest, message)
    }

    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::Unauthorized, message)
    }

    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::Forbidden, message)
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::NotFound, message)
    }

    /// A dependency is down: 503 with `Retry-After: 1`.
    pub fn unavailable(code: ErrorCode, message: impl Into<String>) -> Self {
        Self::new(code, message).retry_after(1)
    }

    /// A quarantined version (its calls took runners down): 503 without `Retry-After`, since
    /// waiting does not help; a platform admin must clear it. The code leads the message too,
    /// for protocols whose errors carry only a message (KServe v2).
    pub fn quarantined(reason: impl std::fmt::Display) -> Self {
        Self::new(
            ErrorCode::VersionQuarantined,
            format!(
                "version_quarantined: this model version is quarantined ({reason}); it answers no inference until a platform admin clears it"
            ),
        )
    }

    pub fn internal(source: impl std::error::Error + Send + Sync + 'static) -> Self {
        Self::new(ErrorCode::Internal, "internal error; it has been logged").with_source(source)
    }

    pub fn with_details(mut self, details: Value) -> Self {
        self.details = Some(details);
        self
    }

    pub fn retry_after(self, secs: u64) -> Self {
        self.with_header(header::RETRY_AFTER, secs.to_string())
    }

    /// A header sent with the error (`Retry-After`, `Content-Range`, …).
    pub fn with_header(mut self, name: HeaderName, value: String) -> Self {
        match HeaderValue::try_from(value) {
            Ok(value) => self.headers.push((name, value)),
            Err(e) => tracing::error!(header = %name, error = %e, "dropping an invalid error header (a bug)"),
        }
        self
    }

    pub fn with_source(mut self, source: impl std::error::Error + Send + Sync + 'static) -> Self {
        self.source = Some(Box::new(source));
        self
    }

    pub fn status(&self) -> StatusCode {
        self.status
    }

    pub fn code(&self) -> ErrorCode {
        self.code
    }

    /// What went wrong, for the caller.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// Logs a server-side failure with its whole cause chain (the caller's errors are not logged).
    pub(crate) fn log_if_ours(&self) {
        if self.status.is_server_error() {
            let chain = error_chain(self);
            tracing::error!(http.status = self.status.as_u16(), error.code = self.code.as_str(), error = %chain, "request failed");
        }
    }

    /// The answer to send: this error's status and headers (`Retry-After`, …) with `body`, a
    /// protocol's shape of it (the envelope here, `{"error": "…"}` for KServe v2). Every
    /// protocol renders through it, so a server-side failure is logged here, once.
    pub(crate) fn respond(&self, body: &Value) -> HttpResponse {
        self.log_if_ours();
        let mut response = HttpResponse::build(self.status);
        for (name, value) in &self.headers {
            response.insert_header((name.clone(), value.clone()));
        }
        if self.status == StatusCode::UNAUTHORIZED {
            response.insert_header((header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer")));
        }
        response.json(body)
    }

    /// OpenAI's `type` for the status, so OpenAI SDKs classify the error as they expect.
    fn kind(&self) -> &'static str {
        match self.status.as_u16() {
            401 => "authentication_error",
            403 => "permission_error",
            404 => "not_found_error",
            429 => "rate_limit_error",
            400..=499 => "invalid_request_error",
            _ => "api_error",
        }
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        self.status
    }

    fn error_response(&self) -> HttpResponse {
        let mut body = json!({ "code": self.code.as_str(), "message": self.message, "type": self.kind() });
        if let Some(details) = &self.details {
            body["details"] = details.clone();
        }
        self.respond(&json!({ "error": body }))
    }
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut next = e.source();
    while let Some(cause) = next {
        out.push_str(": ");
        out.push_str(&cause.to_string());
        next = cause.source();
    }
    out
}

impl From<registry::Error> for ApiError {
    fn from(e: registry::Error) -> Self {
        use registry::Error as E;
        let message = e.to_string();
        match e {
            E::NotFound { .. } => ApiError::not_found(message),
            E::Conflict(_) => ApiError::new(ErrorCode::Conflict, message),
            E::Invalid(_) => ApiError::invalid(message),
            E::DigestMismatch { .. } => ApiError::new(ErrorCode::DigestMismatch, message),
            E::QuotaExceeded(_) => ApiError::new(ErrorCode::StorageQuotaExceeded, message),
            E::Validation(ref problems) => {
                let details = json!({ "problems": problems });
                ApiError::new(ErrorCode::ValidationFailed, message).with_details(details)
            }
            E::Upload(_) => ApiError::new(ErrorCode::UploadInterrupted, message).with_source(e),
            E::DatabaseUnavailable(_) => ApiError::unavailable(ErrorCode::DatabaseUnavailable, message).with_source(e),
            E::Storage(object_store::Error::NotFound { .. }) => {
                ApiError::new(ErrorCode::BlobMissing, "a stored file is missing from object storage").with_source(e)
            }
            E::Storage(_) => ApiError::unavailable(ErrorCode::StorageUnavailable, message).with_source(e),
            E::Quarantined(ref q) => ApiError::quarantined(&q.reason),
            E::Database(_) | E::StorageConfig(_) | E::Io(..) => ApiError::internal(e),
        }
    }
}

/// A registry error shared by every waiter of one cache load (moka hands each an `Arc`).
impl From<std::sync::Arc<registry::Error>> for ApiError {
    fn from(e: std::sync::Arc<registry::Error>) -> Self {
        match &*e {
            registry::Error::DatabaseUnavailable(_) => {
                ApiError::unavailable(ErrorCode::DatabaseUnavailable, e.to_string()).with_source(e)
            }
            _ => ApiError::internal(e),
        }
    }
}

impl From<tonic::Status> for ApiError {
    fn from(s: tonic::Status) -> Self {
        use tonic::Code;
        let message = s.message().to_owned();
        match s.code() {
            Code::InvalidArgument => ApiError::invalid(message),
            Code::FailedPrecondition => ApiError::new(ErrorCode::ModelUnloadable, message),
            Code::ResourceExhausted => ApiError::new(ErrorCode::Overloaded, message).retry_after(1),
            // A transport failure (its source) names addresses and certificates: for the log only.
            Code::Unavailable if std::error::Error::source(&s).is_some() => {
                ApiError::unavailable(ErrorCode::RunnerUnavailable, "no runner could be reached; try again shortly")
                    .with_source(s)
            }
            Code::Unavailable => ApiError::unavailable(ErrorCode::RunnerUnavailable, message).with_source(s),
            Code::DeadlineExceeded => ApiError::new(ErrorCode::Timeout, message),
            // tonic's server ends a call past its `grpc-timeout` as CANCELLED "Timeout expired".
            Code::Cancelled if message == "Timeout expired" => {
                ApiError::new(ErrorCode::Timeout, "the runner did not answer within this kind of call's timeout")
            }
            // The runner's own failures (a corrupt file, a refused spec, a fault) are ours to
            // read in the log; the caller learns only that it failed.
            _ => ApiError::new(ErrorCode::RunnerError, "the runner could not serve this request; it has been logged")
                .with_source(s),
        }
    }
}
