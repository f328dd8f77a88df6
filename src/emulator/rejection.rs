//! FCM's error table (`ErrorCode`) and the envelope of every non-200 answer (`Rejection`).
//! A QUOTA_EXCEEDED answer always says which quota was hit, in a `google.rpc.QuotaFailure`
//! detail beside the FcmError one.

use hyper::StatusCode;
use serde_json::{Value, json};

use crate::fcm::QuotaScope;

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
    /// The quota a QUOTA_EXCEEDED answer names.
    pub(super) quota: Option<QuotaViolation>,
}

/// One violation of a `google.rpc.QuotaFailure` detail (`{subject, description}`).
#[derive(Debug)]
pub(super) struct QuotaViolation {
    /// What the subject names, counted in `Stats::quota`.
    pub(super) scope: QuotaScope,
    /// `device:<token>` or `project:<project id>`, after the proto's `project:` example.
    pub(super) subject: String,
    /// The case of FCM's ErrorCode reference: "Device message rate exceeded" or
    /// "Message rate exceeded", with the limit.
    pub(super) description: String,
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
            quota: None,
        }
    }

    /// QUOTA_EXCEEDED for the project's quota: the sender's whole app must slow down.
    pub(super) fn project_quota(project: &str, message: String, retry_after: Option<u64>) -> Self {
        Rejection {
            retry_after,
            quota: Some(QuotaViolation {
                scope: QuotaScope::Project,
                subject: format!("project:{project}"),
                description: "Message rate exceeded: the project's messages a minute".into(),
            }),
            ..Rejection::fcm(ErrorCode::QuotaExceeded, message)
        }
    }

    /// QUOTA_EXCEEDED for one device's quota: only pushes to `token` must wait.
    pub(super) fn device_quota(token: &str, description: String, retry_after: Option<u64>) -> Self {
        Rejection {
            retry_after,
            quota: Some(QuotaViolation {
                scope: QuotaScope::Device,
                subject: format!("device:{token}"),
                description: format!("Device message rate exceeded: {description}"),
            }),
            ..Rejection::fcm(
                ErrorCode::QuotaExceeded,
                "Device message rate exceeded.".into(),
            )
        }
    }

    pub(super) fn plain(http: StatusCode, status: &'static str, message: String) -> Self {
        Rejection {
            http,
            status,
            code: None,
            message,
            retry_after: None,
            quota: None,
        }
    }

    pub(super) fn stats_key(&self) -> &'static str {
        self.code.map_or(self.status, ErrorCode::as_str)
    }

    pub(super) fn envelope(&self) -> Value {
        let mut error =
            json!({"code": self.http.as_u16(), "message": self.message, "status": self.status});
        if let Some(code) = self.code {
            let mut details = vec![json!({
                "@type": "type.googleapis.com/google.firebase.fcm.v1.FcmError",
                "errorCode": code.as_str(),
            })];
            if let Some(quota) = &self.quota {
                details.push(json!({
                    "@type": "type.googleapis.com/google.rpc.QuotaFailure",
                    "violations": [{"subject": quota.subject, "description": quota.description}],
                }));
            }
            error["details"] = Value::Array(details);
        }
        json!({ "error": error })
    }
}
