//! FCM's error table (`ErrorCode`) and the envelope of every non-200 answer (`Rejection`).

use hyper::StatusCode;
use serde_json::{Value, json};

/// The `errorCode`s of an FcmError detail, i.e. the table in fcm-v1.md.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorCode {
    InvalidArgument,
    Unregistered,
    SenderIdMismatch,
    ThirdPartyAuthError,
    QuotaExceeded,
    Unavailable,
    Internal,
}

impl ErrorCode {
    pub const ALL: [ErrorCode; 7] = [
        Self::InvalidArgument,
        Self::Unregistered,
        Self::SenderIdMismatch,
        Self::ThirdPartyAuthError,
        Self::QuotaExceeded,
        Self::Unavailable,
        Self::Internal,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::InvalidArgument => "INVALID_ARGUMENT",
            Self::Unregistered => "UNREGISTERED",
            Self::SenderIdMismatch => "SENDER_ID_MISMATCH",
            Self::ThirdPartyAuthError => "THIRD_PARTY_AUTH_ERROR",
            Self::QuotaExceeded => "QUOTA_EXCEEDED",
            Self::Unavailable => "UNAVAILABLE",
            Self::Internal => "INTERNAL",
        }
    }

    /// The HTTP status and canonical `error.status` Google pairs with this code.
    pub fn http(self) -> (StatusCode, &'static str) {
        match self {
            Self::InvalidArgument => (StatusCode::BAD_REQUEST, "INVALID_ARGUMENT"),
            Self::Unregistered => (StatusCode::NOT_FOUND, "NOT_FOUND"),
            Self::SenderIdMismatch => (StatusCode::FORBIDDEN, "PERMISSION_DENIED"),
            Self::ThirdPartyAuthError => (StatusCode::UNAUTHORIZED, "UNAUTHENTICATED"),
            Self::QuotaExceeded => (StatusCode::TOO_MANY_REQUESTS, "RESOURCE_EXHAUSTED"),
            Self::Unavailable => (StatusCode::SERVICE_UNAVAILABLE, "UNAVAILABLE"),
            Self::Internal => (StatusCode::INTERNAL_SERVER_ERROR, "INTERNAL"),
        }
    }

    pub fn parse(code: &str) -> Result<ErrorCode, String> {
        Self::ALL
            .into_iter()
            .find(|c| c.as_str() == code)
            .ok_or_else(|| format!("unknown FCM error code {code:?}"))
    }
}

/// A non-200 answer of `messages:send` in Google's error envelope.
#[derive(Debug)]
pub(super) struct Rejection {
    pub(super) http: StatusCode,
    pub(super) status: &'static str,
    /// The FcmError detail; absent where Google sends none (bad credentials, unknown project).
    pub(super) code: Option<ErrorCode>,
    pub(super) message: String,
    pub(super) retry_after: Option<u64>,
}

impl Rejection {
    pub(super) fn fcm(code: ErrorCode, message: String) -> Self {
        let (http, status) = code.http();
        Rejection {
            http,
            status,
            code: Some(code),
            message,
            retry_after: None,
        }
    }

    pub(super) fn plain(http: StatusCode, status: &'static str, message: String) -> Self {
        Rejection {
            http,
            status,
            code: None,
            message,
            retry_after: None,
        }
    }

    pub(super) fn stats_key(&self) -> &'static str {
        self.code.map_or(self.status, ErrorCode::as_str)
    }

    pub(super) fn envelope(&self) -> Value {
        let mut error =
            json!({"code": self.http.as_u16(), "message": self.message, "status": self.status});
        if let Some(code) = self.code {
            error["details"] = json!([{
                "@type": "type.googleapis.com/google.firebase.fcm.v1.FcmError",
                "errorCode": code.as_str(),
            }]);
        }
        json!({ "error": error })
    }
}
