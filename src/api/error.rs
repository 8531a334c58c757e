//! Errors as the API answers them: a status and `{"error": {"code", "message"}}`, for the
//! handlers' own errors and for salvo's (no route, wrong method, body too large).

use salvo::http::{StatusCode, StatusError};
use salvo::oapi::{
    Components, Content, EndpointOutRegister, Operation, Response as OaResponse, ToSchema,
};
use salvo::prelude::*;
use serde::Serialize;

use crate::core::spec::SpecError;
use crate::store::StoreError;

/// An error as the API answers it.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
        }
    }

    pub(super) fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, message)
    }

    pub(super) fn job_not_found(id: &str) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "upload_not_found",
            format!("no upload job has id {id:?}"),
        )
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        if let StoreError::Owned { .. } = e {
            return ApiError::new(StatusCode::CONFLICT, "managed_elsewhere", e.to_string());
        }
        if let StoreError::Overlap { .. } = e {
            return ApiError::new(StatusCode::CONFLICT, "prefix_overlap", e.to_string());
        }
        if e.is_unavailable() {
            // Nothing was stored; the same request can succeed once the database can be
            // written again (a full disk given room, a lock released).
            tracing::warn!(error = %e, "the database cannot be written; the request is refused with 503");
            return ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "database_unavailable",
                format!(
                    "nothing was stored: ferry cannot write its database now ({e}); try again later"
                ),
            );
        }
        // The cause goes to the log; the client learns only that it was ours.
        tracing::error!(error = %e, "store error while answering a request");
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "ferry could not read or write its database; see its log",
        )
    }
}

impl From<SpecError> for ApiError {
    fn from(e: SpecError) -> Self {
        let code = match e {
            SpecError::RelativeSourceFolder(_) | SpecError::EmptySourceFolder => {
                "invalid_source_folder"
            }
            SpecError::InvalidBucket { .. } => "invalid_bucket",
            SpecError::InvalidPattern { .. } => "invalid_pattern",
            SpecError::InvalidExclude(_) => "invalid_exclude",
            SpecError::InvalidAfterUpload(_) => "invalid_after_upload",
            SpecError::InvalidObjectOption(ref o) => match o.field {
                "key_prefix" => "invalid_key_prefix",
                "storage_class" => "invalid_storage_class",
                "sse" => "invalid_sse",
                "kms_key_id" => "invalid_kms_key_id",
                "metadata" => "invalid_metadata",
                _ => "invalid_tags",
            },
        };
        ApiError::bad_request(code, e.to_string())
    }
}

/// The JSON body of every error.
#[derive(Serialize, ToSchema)]
#[salvo(schema(name = "ferry.api.ErrorBody"))]
pub struct ErrorBody {
    error: ErrorDetail,
}

#[derive(Serialize, ToSchema)]
#[salvo(schema(name = "ferry.api.ErrorDetail"))]
pub struct ErrorDetail {
    /// A stable, machine-readable code, such as `invalid_json` or `upload_not_found`.
    code: String,
    /// What was wrong and what is accepted.
    message: String,
}

fn error_body(code: &str, message: &str) -> ErrorBody {
    ErrorBody {
        error: ErrorDetail {
            code: code.to_owned(),
            message: message.to_owned(),
        },
    }
}

impl Scribe for ApiError {
    fn render(self, res: &mut Response) {
        res.status_code(self.status);
        res.render(Json(error_body(self.code, &self.message)));
    }
}

impl EndpointOutRegister for ApiError {
    fn register(components: &mut Components, operation: &mut Operation) {
        operation.responses.insert(
            "default",
            OaResponse::new("An error: `{\"error\": {\"code\", \"message\"}}`").add_content(
                "application/json",
                Content::new(ErrorBody::to_schema(components)),
            ),
        );
    }
}

/// Turns salvo's own errors (no route, wrong method, body too large) into the same JSON.
pub(super) struct JsonErrors;

#[async_trait]
impl Handler for JsonErrors {
    async fn handle(
        &self,
        _req: &mut Request,
        _depot: &mut Depot,
        res: &mut Response,
        _ctrl: &mut FlowCtrl,
    ) {
        let status = res.status_code.unwrap_or(StatusCode::NOT_FOUND);
        if !(status.is_client_error() || status.is_server_error()) {
            return;
        }
        if !(res.body.is_none() || res.body.is_error()) {
            return;
        }
        let err = StatusError::from_code(status).unwrap_or_else(StatusError::internal_server_error);
        let code = match status {
            StatusCode::NOT_FOUND => "not_found",
            StatusCode::METHOD_NOT_ALLOWED => "method_not_allowed",
            StatusCode::PAYLOAD_TOO_LARGE => "payload_too_large",
            s if s.is_server_error() => "internal",
            _ => "bad_request",
        };
        let message = match status {
            StatusCode::NOT_FOUND => "no such endpoint; see /openapi.json for the API".to_owned(),
            StatusCode::METHOD_NOT_ALLOWED => {
                "this endpoint does not take that method; see /openapi.json for the API".to_owned()
            }
            _ => err.brief.clone(),
        };
        res.status_code(status);
        res.render(Json(error_body(code, &message)));
    }
}
