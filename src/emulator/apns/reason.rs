//! Apple's table of refusal reasons (`Reason`, each with its HTTP status) and one refusal as
//! the emulator answers it (`Refusal`): the body is Apple's `{"reason": …}` (with `timestamp`
//! for 410), and why this rule fired goes to the `x-emulator-detail` header and the debug log,
//! never into the body, so a client parses exactly what Apple sends.

use hyper::StatusCode;
use serde_json::{Value, json};

/// The `reason`s of an APNs error answer (apns.md, Apple's "Handling notification responses"),
/// and two of the emulator's own for what Apple's table has no word for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    BadCollapseId,
    BadDeviceToken,
    BadExpirationDate,
    BadMessageId,
    BadPriority,
    BadTopic,
    DeviceTokenNotForTopic,
    DuplicateHeaders,
    InvalidPushType,
    MissingDeviceToken,
    MissingTopic,
    PayloadEmpty,
    TopicDisallowed,
    ExpiredProviderToken,
    InvalidProviderToken,
    MissingProviderToken,
    BadPath,
    MethodNotAllowed,
    Unregistered,
    PayloadTooLarge,
    TooManyProviderTokenUpdates,
    TooManyRequests,
    InternalServerError,
    ServiceUnavailable,
    Shutdown,
    /// The emulator's own: a body that is not a JSON object with an `aps` dictionary of the
    /// right types. Apple's table names no reason for it.
    BadPayload,
    /// The emulator's own: a request over HTTP/1.x. Apple's servers speak only HTTP/2.
    Http2Required,
}

impl Reason {
    /// Apple's reasons, the ones `--fail-token` may force.
    pub const APPLE: [Reason; 25] = [
        Self::BadCollapseId,
        Self::BadDeviceToken,
        Self::BadExpirationDate,
        Self::BadMessageId,
        Self::BadPriority,
        Self::BadTopic,
        Self::DeviceTokenNotForTopic,
        Self::DuplicateHeaders,
        Self::InvalidPushType,
        Self::MissingDeviceToken,
        Self::MissingTopic,
        Self::PayloadEmpty,
        Self::TopicDisallowed,
        Self::ExpiredProviderToken,
        Self::InvalidProviderToken,
        Self::MissingProviderToken,
        Self::BadPath,
        Self::MethodNotAllowed,
        Self::Unregistered,
        Self::PayloadTooLarge,
        Self::TooManyProviderTokenUpdates,
        Self::TooManyRequests,
        Self::InternalServerError,
        Self::ServiceUnavailable,
        Self::Shutdown,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::BadCollapseId => "BadCollapseId",
            Self::BadDeviceToken => "BadDeviceToken",
            Self::BadExpirationDate => "BadExpirationDate",
            Self::BadMessageId => "BadMessageId",
            Self::BadPriority => "BadPriority",
            Self::BadTopic => "BadTopic",
            Self::DeviceTokenNotForTopic => "DeviceTokenNotForTopic",
            Self::DuplicateHeaders => "DuplicateHeaders",
            Self::InvalidPushType => "InvalidPushType",
            Self::MissingDeviceToken => "MissingDeviceToken",
            Self::MissingTopic => "MissingTopic",
            Self::PayloadEmpty => "PayloadEmpty",
            Self::TopicDisallowed => "TopicDisallowed",
            Self::ExpiredProviderToken => "ExpiredProviderToken",
            Self::InvalidProviderToken => "InvalidProviderToken",
            Self::MissingProviderToken => "MissingProviderToken",
            Self::BadPath => "BadPath",
            Self::MethodNotAllowed => "MethodNotAllowed",
            Self::Unregistered => "Unregistered",
            Self::PayloadTooLarge => "PayloadTooLarge",
            Self::TooManyProviderTokenUpdates => "TooManyProviderTokenUpdates",
            Self::TooManyRequests => "TooManyRequests",
            Self::InternalServerError => "InternalServerError",
            Self::ServiceUnavailable => "ServiceUnavailable",
            Self::Shutdown => "Shutdown",
            Self::BadPayload => "BadPayload",
            Self::Http2Required => "HTTP2Required",
        }
    }

    /// The HTTP status Apple pairs with this reason.
    pub fn status(self) -> StatusCode {
        match self {
            Self::ExpiredProviderToken
            | Self::InvalidProviderToken
            | Self::MissingProviderToken => StatusCode::FORBIDDEN,
            Self::BadPath => StatusCode::NOT_FOUND,
            Self::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            Self::Unregistered => StatusCode::GONE,
            Self::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Self::TooManyProviderTokenUpdates | Self::TooManyRequests => {
                StatusCode::TOO_MANY_REQUESTS
            }
            Self::InternalServerError => StatusCode::INTERNAL_SERVER_ERROR,
            Self::ServiceUnavailable | Self::Shutdown => StatusCode::SERVICE_UNAVAILABLE,
            _ => StatusCode::BAD_REQUEST,
        }
    }

    /// One of Apple's reasons by its name.
    pub fn parse_apple(name: &str) -> Result<Reason, String> {
        Self::APPLE
            .into_iter()
            .find(|r| r.as_str() == name)
            .ok_or_else(|| format!("unknown APNs reason {name:?}"))
    }
}

/// A non-200 answer to one request.
#[derive(Debug)]
pub(super) struct Refusal {
    pub(super) reason: Reason,
    /// Which rule fired, with the offending value: the `x-emulator-detail` header.
    pub(super) detail: String,
    /// `Retry-After` seconds, for injected and forced 503/429 with `--retry-after`.
    pub(super) retry_after: Option<u64>,
    /// 410's `timestamp`: when the token stopped being valid, unix milliseconds.
    pub(super) timestamp: Option<i64>,
}

impl Refusal {
    pub(super) fn new(reason: Reason, detail: impl Into<String>) -> Refusal {
        Refusal {
            reason,
            detail: detail.into(),
            retry_after: None,
            timestamp: None,
        }
    }

    /// 410 Unregistered, the token dead as of `timestamp` (unix ms).
    pub(super) fn unregistered(timestamp: i64, detail: impl Into<String>) -> Refusal {
        Refusal {
            timestamp: Some(timestamp),
            ..Refusal::new(Reason::Unregistered, detail)
        }
    }

    /// The answer's body, exactly Apple's shape.
    pub(super) fn body(&self) -> Value {
        match self.timestamp {
            Some(timestamp) => json!({"reason": self.reason.as_str(), "timestamp": timestamp}),
            None => json!({"reason": self.reason.as_str()}),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_apple_reason_parses_back_and_has_its_status_class() {
        for reason in Reason::APPLE {
            assert_eq!(Reason::parse_apple(reason.as_str()), Ok(reason));
        }
        assert!(Reason::parse_apple("BadPayload").is_err(), "not Apple's");
        assert!(Reason::parse_apple("Gone").is_err());
        let status = |r: Reason| r.status().as_u16();
        assert_eq!(status(Reason::BadDeviceToken), 400);
        assert_eq!(status(Reason::InvalidProviderToken), 403);
        assert_eq!(status(Reason::Unregistered), 410);
        assert_eq!(status(Reason::PayloadTooLarge), 413);
        assert_eq!(status(Reason::TooManyProviderTokenUpdates), 429);
        assert_eq!(status(Reason::Shutdown), 503);
    }

    #[test]
    fn only_unregistered_bodies_carry_a_timestamp() {
        assert_eq!(
            Refusal::unregistered(1_700_000_000_123, "x").body(),
            json!({"reason": "Unregistered", "timestamp": 1_700_000_000_123_i64})
        );
        assert_eq!(
            Refusal::new(Reason::BadTopic, "x").body(),
            json!({"reason": "BadTopic"})
        );
    }
}
