//! Errors as the API answers them: a status code and a JSON body.

use super::*;

/// An API error: status, kind and detail.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    kind: &'static str,
    detail: String,
}

impl ApiError {
    pub(super) fn new(status: StatusCode, kind: &'static str, detail: impl Into<String>) -> Self {
        Self {
            status,
            kind,
            detail: detail.into(),
        }
    }

    pub(super) fn bad_request(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "bad_request", detail)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (
            self.status,
            Json(json!({"error": self.kind, "detail": self.detail})),
        )
            .into_response()
    }
}

impl From<pipeline::Error> for ApiError {
    fn from(e: pipeline::Error) -> Self {
        use crate::runtime::Error as R;
        match e {
            pipeline::Error::UnknownHandler(name) => ApiError::new(
                StatusCode::NOT_FOUND,
                "unknown_handler",
                format!("no handler named {name}"),
            ),
            pipeline::Error::Component { source, .. } => match source {
                R::WrongWorld(_) => ApiError::new(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "wrong_world",
                    source.to_string(),
                ),
                R::NotWasm(_) | R::CoreModule | R::Invalid(_) | R::Read { .. } => ApiError::new(
                    StatusCode::BAD_REQUEST,
                    "invalid_component",
                    source.to_string(),
                ),
                R::Engine(_) => ApiError::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "internal",
                    source.to_string(),
                ),
            },
            pipeline::Error::ManagedByConfig(name) => ApiError::new(
                StatusCode::CONFLICT,
                "managed_by_config",
                format!(
                    "handler {name} is declared in the host's configuration file, which owns it: change it there"
                ),
            ),
            pipeline::Error::Broker(e) => ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "broker_unavailable",
                e.to_string(),
            ),
            pipeline::Error::Unsupported(detail) => {
                ApiError::new(StatusCode::BAD_REQUEST, "unsupported", detail)
            }
            pipeline::Error::Stopping => ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "stopping",
                "the host is shutting down",
            ),
            pipeline::Error::Store(e) => e.into(),
        }
    }
}

impl From<store::Error> for ApiError {
    fn from(e: store::Error) -> Self {
        match e {
            store::Error::NotFound(what) => ApiError::new(
                StatusCode::NOT_FOUND,
                "not_found",
                format!("{what} not found"),
            ),
            store::Error::Conflict(detail) => {
                ApiError::new(StatusCode::CONFLICT, "conflict", detail)
            }
            other => {
                tracing::error!("store error in the admin API: {other}");
                ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "store_unavailable",
                    other.to_string(),
                )
            }
        }
    }
}

pub(super) type ApiResult<T> = Result<T, ApiError>;
