//! Every error code the gateway answers, with its status and when it is answered: one list,
//! from which docs/API.md's error table is printed (a test keeps the two equal).

use actix_web::http::StatusCode;

macro_rules! error_codes {
    ($($(#[doc = $when:literal])+ $variant:ident = ($code:literal, $status:ident);)+) => {
        /// What went wrong, as the `code` of an error's answer.
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        pub enum ErrorCode {
            $($(#[doc = $when])+ $variant,)+
        }

        impl ErrorCode {
            pub const ALL: &[ErrorCode] = &[$(ErrorCode::$variant),+];

            pub const fn as_str(self) -> &'static str {
                match self {
                    $(ErrorCode::$variant => $code,)+
                }
            }

            pub const fn status(self) -> StatusCode {
                match self {
                    $(ErrorCode::$variant => StatusCode::$status,)+
                }
            }

            /// When it is answered, as docs/API.md says.
            pub fn when(self) -> String {
                let lines: &[&str] = match self {
                    $(ErrorCode::$variant => &[$($when),+],)+
                };
                lines.iter().map(|l| l.trim()).collect::<Vec<_>>().join(" ")
            }
        }
    };
}

error_codes! {
    /// the request breaks a rule; nothing changed
    InvalidRequest = ("invalid_request", BAD_REQUEST);
    /// the JSON body does not parse, or a field has the wrong type
    InvalidJson = ("invalid_json", BAD_REQUEST);
    /// an inference input is not text, is empty, or there are more than 2,048 of them
    InvalidInput = ("invalid_input", BAD_REQUEST);
    /// a query parameter (a time, a filter) is malformed
    InvalidQuery = ("invalid_query", BAD_REQUEST);
    /// an uploaded file's bytes do not have the digest it declared; nothing was kept
    DigestMismatch = ("digest_mismatch", BAD_REQUEST);
    /// an upload's body ended early or failed; nothing was kept
    UploadInterrupted = ("upload_interrupted", BAD_REQUEST);
    /// the object store cannot presign download URLs (download the file directly)
    NotSupported = ("not_supported", BAD_REQUEST);
    /// no credential, an unknown, expired or revoked key, or a suspended tenant
    Unauthorized = ("unauthorized", UNAUTHORIZED);
    /// a token failed a check (the message says which)
    InvalidToken = ("invalid_token", UNAUTHORIZED);
    /// the credential's role is below what the route needs
    Forbidden = ("forbidden", FORBIDDEN);
    /// missing — or belonging to another tenant, which answers identically
    NotFound = ("not_found", NOT_FOUND);
    /// an inference call names no model callable in the caller's tenant
    ModelNotFound = ("model_not_found", NOT_FOUND);
    /// a request body (an upload, JSON, a form) sent nothing for `body_idle_timeout_secs` (30 s);
    /// nothing was kept
    BodyTimeout = ("body_timeout", REQUEST_TIMEOUT);
    /// name taken; version already committed (versions are immutable)
    Conflict = ("conflict", CONFLICT);
    /// the JSON body is larger than the route takes
    BodyTooLarge = ("body_too_large", PAYLOAD_TOO_LARGE);
    /// the upload would take the tenant past its storage quota; nothing was stored
    StorageQuotaExceeded = ("storage_quota_exceeded", PAYLOAD_TOO_LARGE);
    /// the body is not JSON
    UnsupportedMediaType = ("unsupported_media_type", UNSUPPORTED_MEDIA_TYPE);
    /// a file's `Range` lies outside it; `Content-Range` gives its size
    RangeNotSatisfiable = ("range_not_satisfiable", RANGE_NOT_SATISFIABLE);
    /// commit found the version unusable; `details.problems` lists every `{file, message}`
    ValidationFailed = ("validation_failed", UNPROCESSABLE_ENTITY);
    /// the runner could not load a committed version (e.g. larger than its memory budget)
    ModelUnloadable = ("model_unloadable", UNPROCESSABLE_ENTITY);
    /// a request limit is reached; the message and `details` name it (`{"limit", "of":
    /// "tenant" \| "key", "value"}`), `Retry-After` says when it admits again
    RateLimited = ("rate_limited", TOO_MANY_REQUESTS);
    /// the model's queue is full; `Retry-After` says when to retry
    Overloaded = ("overloaded", TOO_MANY_REQUESTS);
    /// resumable chunks being received fill the gateway's buffer (or the tenant's quarter of
    /// it); `Retry-After: 1`
    TooManyChunks = ("too_many_chunks", TOO_MANY_REQUESTS);
    /// a fault of ours; it has been logged with its cause
    Internal = ("internal", INTERNAL_SERVER_ERROR);
    /// a stored file is missing from object storage; it has been logged
    BlobMissing = ("blob_missing", INTERNAL_SERVER_ERROR);
    /// the runner failed this request (a corrupt file, a fault); it has been logged
    RunnerError = ("runner_error", BAD_GATEWAY);
    /// the metadata database is down; `Retry-After` is set
    DatabaseUnavailable = ("database_unavailable", SERVICE_UNAVAILABLE);
    /// object storage is down; `Retry-After` is set
    StorageUnavailable = ("storage_unavailable", SERVICE_UNAVAILABLE);
    /// no runner could be reached; `Retry-After` is set
    RunnerUnavailable = ("runner_unavailable", SERVICE_UNAVAILABLE);
    /// an OIDC issuer's keys could not be fetched; `Retry-After` is set
    IdentityProviderUnavailable = ("identity_provider_unavailable", SERVICE_UNAVAILABLE);
    /// `/readyz`: a dependency is unavailable; `details` says which
    NotReady = ("not_ready", SERVICE_UNAVAILABLE);
    /// the version's calls took runners down (see "Containment"); no `Retry-After`: it stays
    /// refused until a platform admin clears it
    VersionQuarantined = ("version_quarantined", SERVICE_UNAVAILABLE);
    /// the runner did not answer in time; a generation past `generate_timeout_ms` (whole
    /// stream) is stopped there
    Timeout = ("timeout", GATEWAY_TIMEOUT);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The error table as docs/API.md prints it.
    fn markdown() -> String {
        let mut out = String::from("| status | code | when |\n| --- | --- | --- |\n");
        for code in ErrorCode::ALL {
            out.push_str(&format!("| {} | `{}` | {} |\n", code.status().as_u16(), code.as_str(), code.when()));
        }
        out
    }

    #[test]
    fn the_api_docs_print_this_table() {
        let printed = crate::api_docs_section("error-codes");
        assert_eq!(printed, markdown(), "docs/API.md's error table differs from error/code.rs");
    }

    #[test]
    fn codes_are_unique_and_errors_only() {
        let mut seen = std::collections::HashSet::new();
        for code in ErrorCode::ALL {
            assert!(seen.insert(code.as_str()), "{} twice", code.as_str());
            assert!(code.status().is_client_error() || code.status().is_server_error(), "{code:?}");
        }
    }
}
