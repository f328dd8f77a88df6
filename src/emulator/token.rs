//! Google's OAuth token endpoint (`POST /token`): the JWT-bearer grant checked claim by claim,
//! the access tokens it issues, and the bearer check every send passes first.

use std::sync::PoisonError;
use std::time::Instant;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use http_body_util::Full;
use hyper::body::Bytes;
use hyper::header::{AUTHORIZATION, HeaderMap};
use hyper::{Response, StatusCode};
use rand::Rng as _;
use rsa::pkcs1v15::Signature;
use rsa::signature::Verifier as _;
use serde_json::{Map, Value, json};

use super::rejection::Rejection;
use super::{State, media_type, reply, unix_now};

/// The OAuth scope an FCM sender must ask for.
pub const FCM_SCOPE: &str = "https://www.googleapis.com/auth/firebase.messaging";
pub(super) const JWT_BEARER_GRANT: &str = "urn:ietf:params:oauth:grant-type:jwt-bearer";
/// Google's answer to a missing, unknown or expired access token, word for word.
const BAD_CREDENTIALS: &str = "Request had invalid authentication credentials. Expected OAuth 2 \
    access token, login cookie or other valid authentication credential. See \
    https://developers.google.com/identity/sign-in/web/devconsole-project.";

impl State {
    pub(super) fn token(
        &self,
        headers: &HeaderMap,
        body: Result<Bytes, String>,
    ) -> Response<Full<Bytes>> {
        match self.check_grant(headers, body, unix_now()) {
            Ok(()) => {
                let token = format!(
                    "ya29.emulator.{}",
                    URL_SAFE_NO_PAD.encode(rand::rng().random::<[u8; 32]>())
                );
                let now = Instant::now();
                let mut tokens = self.tokens.lock().unwrap_or_else(PoisonError::into_inner);
                // Forget expired tokens here so a long run does not accumulate them.
                tokens.retain(|_, expiry| *expiry > now);
                tokens.insert(token.clone(), now + self.token_ttl);
                drop(tokens);
                self.stats().tokens_issued += 1;
                let body = json!({"access_token": token, "expires_in": self.token_ttl.as_secs(), "token_type": "Bearer"});
                reply(StatusCode::OK, &body, None)
            }
            Err(reason) => {
                tracing::debug!("FCM emulator rejects a token grant: {reason}");
                self.reject("invalid_grant");
                reply(
                    StatusCode::BAD_REQUEST,
                    &json!({"error": "invalid_grant", "error_description": reason}),
                    None,
                )
            }
        }
    }

    /// Checks a JWT-bearer grant the way Google's token endpoint does; `Err` says precisely why.
    fn check_grant(
        &self,
        headers: &HeaderMap,
        body: Result<Bytes, String>,
        now: i64,
    ) -> Result<(), String> {
        if media_type(headers).as_deref() != Some("application/x-www-form-urlencoded") {
            return Err("content-type must be application/x-www-form-urlencoded".into());
        }
        let form = parse_form(&body?)?;
        let field = |name: &str| -> Result<&str, String> {
            let mut values = form
                .iter()
                .filter(|(k, _)| k == name)
                .map(|(_, v)| v.as_str());
            match (values.next(), values.next()) {
                (Some(v), None) => Ok(v),
                (None, _) => Err(format!("missing form field {name}")),
                (Some(_), Some(_)) => Err(format!("form field {name} given more than once")),
            }
        };
        let grant_type = field("grant_type")?;
        if grant_type != JWT_BEARER_GRANT {
            return Err(format!(
                "grant_type must be {JWT_BEARER_GRANT}, got {grant_type:?}"
            ));
        }
        let assertion = field("assertion")?;
        let parts: Vec<&str> = assertion.split('.').collect();
        let [header_b64, claims_b64, signature_b64] = parts[..] else {
            return Err(format!(
                "assertion must be a JWT of 3 parts, got {}",
                parts.len()
            ));
        };
        let header = jwt_json(header_b64, "header")?;
        expect(&header, "header alg", "RS256")?;
        expect(&header, "header typ", "JWT")?;
        expect(&header, "header kid", &self.key_id)?;

        let signature = URL_SAFE_NO_PAD
            .decode(signature_b64)
            .map_err(|e| format!("JWT signature is not base64url without padding: {e}"))?;
        let signature = Signature::try_from(signature.as_slice())
            .map_err(|e| format!("JWT signature malformed: {e}"))?;
        self.verifying_key
            .verify(format!("{header_b64}.{claims_b64}").as_bytes(), &signature)
            .map_err(|_| {
                "invalid JWT signature: not signed by the service account's key".to_owned()
            })?;

        let claims = jwt_json(claims_b64, "claims")?;
        expect(&claims, "claim iss", &self.client_email)?;
        expect(&claims, "claim aud", &self.token_uri)?;
        let scope = (claims.get("scope").and_then(Value::as_str))
            .ok_or("JWT claim scope missing or not a string")?;
        if !scope.split(' ').any(|s| s == FCM_SCOPE) {
            return Err(format!("JWT claim scope {scope:?} lacks {FCM_SCOPE}"));
        }
        let time = |name: &str| {
            (claims.get(name).and_then(Value::as_i64))
                .ok_or_else(|| format!("JWT claim {name} missing or not an integer"))
        };
        let (iat, exp) = (time("iat")?, time("exp")?);
        if iat > now + 60 {
            return Err(format!(
                "JWT iat {iat} is {}s in the future (clock skew over 60s)",
                iat - now
            ));
        }
        if exp <= now {
            return Err(format!("JWT expired: exp {exp} is not after now {now}"));
        }
        if exp <= iat {
            return Err(format!("JWT exp {exp} is not after iat {iat}"));
        }
        if exp - iat > 3600 {
            return Err(format!(
                "JWT lifetime exp - iat = {}s exceeds 3600s",
                exp - iat
            ));
        }
        Ok(())
    }

    pub(super) fn authenticate(&self, headers: &HeaderMap) -> Result<(), Rejection> {
        let token = headers
            .get(AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        let tokens = self.tokens.lock().unwrap_or_else(PoisonError::into_inner);
        match token.and_then(|t| tokens.get(t)) {
            Some(expiry) if *expiry > Instant::now() => Ok(()),
            // Google answers an expired token exactly like a forged one, without FcmError.
            _ => Err(Rejection::plain(
                StatusCode::UNAUTHORIZED,
                "UNAUTHENTICATED",
                BAD_CREDENTIALS.into(),
            )),
        }
    }
}

/// Checks one string member of a JWT part; `what` is "header kid", "claim aud" and the like.
fn expect(part: &Map<String, Value>, what: &str, expected: &str) -> Result<(), String> {
    let name = what.rsplit(' ').next().unwrap_or(what);
    match part.get(name) {
        Some(Value::String(actual)) if actual == expected => Ok(()),
        Some(actual) => Err(format!("JWT {what} must be {expected:?}, got {actual}")),
        None => Err(format!("JWT {what} missing")),
    }
}

fn jwt_json(part: &str, what: &str) -> Result<Map<String, Value>, String> {
    let bytes = URL_SAFE_NO_PAD
        .decode(part)
        .map_err(|e| format!("JWT {what} is not base64url without padding: {e}"))?;
    match serde_json::from_slice(&bytes) {
        Ok(Value::Object(map)) => Ok(map),
        _ => Err(format!("JWT {what} is not a JSON object")),
    }
}

/// Decodes an `application/x-www-form-urlencoded` body into its pairs, in order.
fn parse_form(body: &[u8]) -> Result<Vec<(String, String)>, String> {
    let body = std::str::from_utf8(body).map_err(|_| "form body is not UTF-8".to_owned())?;
    (body.split('&').filter(|pair| !pair.is_empty()))
        .map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            Ok((percent_decode(k)?, percent_decode(v)?))
        })
        .collect()
}

fn percent_decode(s: &str) -> Result<String, String> {
    let hex_digit = |b: Option<u8>| b.and_then(|b| (b as char).to_digit(16));
    let mut out = Vec::with_capacity(s.len());
    let mut bytes = s.bytes();
    while let Some(b) = bytes.next() {
        match b {
            b'+' => out.push(b' '),
            b'%' => match (hex_digit(bytes.next()), hex_digit(bytes.next())) {
                (Some(hi), Some(lo)) => out.push((hi * 16 + lo) as u8),
                _ => return Err(format!("bad percent-escape in form field {s:?}")),
            },
            _ => out.push(b),
        }
    }
    String::from_utf8(out).map_err(|_| format!("form field {s:?} does not decode to UTF-8"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::emulator::harness::*;
    use reqwest::header::CONTENT_TYPE;
    use std::time::Duration;

    #[tokio::test]
    async fn grant_rejects_a_jwt_signed_by_another_key() {
        let h = spawn(&[]).await;
        h.assert_grant_rejected(&h.jwt(h.header(), h.claims(), &test_key(1)), "signature")
            .await;
    }

    #[tokio::test]
    async fn grant_rejects_a_kid_other_than_the_private_key_id() {
        let h = spawn(&[]).await;
        let mut header = h.header();
        header["kid"] = json!("0123");
        h.assert_grant_rejected(&h.jwt(header, h.claims(), &h.key), "kid")
            .await;
    }

    #[tokio::test]
    async fn grant_rejects_an_alg_other_than_rs256() {
        let h = spawn(&[]).await;
        let mut header = h.header();
        header["alg"] = json!("HS256");
        h.assert_grant_rejected(&h.jwt(header, h.claims(), &h.key), "alg")
            .await;
    }

    #[tokio::test]
    async fn grant_rejects_an_aud_other_than_the_token_uri() {
        let h = spawn(&[]).await;
        let mut claims = h.claims();
        claims["aud"] = json!("https://oauth2.googleapis.com/token");
        h.assert_grant_rejected(&h.jwt(h.header(), claims, &h.key), "aud")
            .await;
    }

    #[tokio::test]
    async fn grant_rejects_an_iss_other_than_the_client_email() {
        let h = spawn(&[]).await;
        let mut claims = h.claims();
        claims["iss"] = json!("someone@else.iam.gserviceaccount.com");
        h.assert_grant_rejected(&h.jwt(h.header(), claims, &h.key), "iss")
            .await;
    }

    #[tokio::test]
    async fn grant_rejects_a_scope_without_firebase_messaging() {
        let h = spawn(&[]).await;
        let mut claims = h.claims();
        claims["scope"] = json!("https://www.googleapis.com/auth/cloud-platform");
        h.assert_grant_rejected(&h.jwt(h.header(), claims, &h.key), "scope")
            .await;
    }

    #[tokio::test]
    async fn grant_accepts_the_firebase_scope_among_others() {
        let h = spawn(&[]).await;
        let mut claims = h.claims();
        claims["scope"] = json!(format!(
            "https://www.googleapis.com/auth/cloud-platform {FCM_SCOPE}"
        ));
        assert_eq!(h.grant(&h.jwt(h.header(), claims, &h.key)).await.0, 200);
    }

    #[tokio::test]
    async fn grant_rejects_an_expired_jwt() {
        let h = spawn(&[]).await;
        let now = unix_now();
        let mut claims = h.claims();
        (claims["iat"], claims["exp"]) = (json!(now - 3700), json!(now - 100));
        h.assert_grant_rejected(&h.jwt(h.header(), claims, &h.key), "expired")
            .await;
    }

    #[tokio::test]
    async fn grant_rejects_a_lifetime_over_an_hour() {
        let h = spawn(&[]).await;
        let mut claims = h.claims();
        claims["exp"] = json!(unix_now() + 3601);
        h.assert_grant_rejected(&h.jwt(h.header(), claims, &h.key), "exceeds 3600s")
            .await;
    }

    #[tokio::test]
    async fn grant_rejects_an_iat_over_a_minute_in_the_future() {
        let h = spawn(&[]).await;
        let now = unix_now();
        let mut claims = h.claims();
        (claims["iat"], claims["exp"]) = (json!(now + 120), json!(now + 600));
        h.assert_grant_rejected(&h.jwt(h.header(), claims, &h.key), "future")
            .await;
    }

    #[tokio::test]
    async fn grant_rejects_a_malformed_assertion() {
        let h = spawn(&[]).await;
        h.assert_grant_rejected("abc.def", "3 parts").await;
    }

    #[tokio::test]
    async fn grant_rejects_another_grant_type_and_non_form_bodies() {
        let h = spawn(&[]).await;
        let form = [
            ("grant_type", "client_credentials"),
            ("assertion", &h.good_jwt()),
        ];
        let response = h
            .http
            .post(h.url("/token"))
            .form(&form)
            .send()
            .await
            .expect("POST /token");
        let (status, body) = read(response).await;
        assert_eq!((status, &body["error"]), (400, &json!("invalid_grant")));
        assert!(
            body["error_description"]
                .as_str()
                .unwrap_or_default()
                .contains("grant_type"),
            "{body}"
        );

        let json_body =
            json!({"grant_type": JWT_BEARER_GRANT, "assertion": h.good_jwt()}).to_string();
        let response = h
            .http
            .post(h.url("/token"))
            .header(CONTENT_TYPE, "application/json")
            .body(json_body);
        let (status, body) = read(response.send().await.expect("POST /token")).await;
        assert_eq!(status, 400);
        assert!(
            body["error_description"]
                .as_str()
                .unwrap_or_default()
                .contains("content-type"),
            "{body}"
        );
        assert_eq!(h.emulator.stats().tokens_issued, 0);
    }

    #[test]
    fn form_decoding_handles_plus_and_escapes_and_rejects_bad_escapes() {
        let pairs = parse_form(b"a=x+y%2Fz%3d&b=&c").expect("valid form");
        let expected =
            [("a", "x y/z="), ("b", ""), ("c", "")].map(|(k, v)| (k.to_owned(), v.to_owned()));
        assert_eq!(pairs, expected);
        assert!(parse_form(b"a=%4").is_err());
        assert!(parse_form(b"a=%zz").is_err());
        assert!(parse_form(b"a=%ff").is_err(), "not UTF-8");
    }

    #[tokio::test]
    async fn send_without_a_bearer_token_is_unauthenticated_without_fcm_detail() {
        let h = spawn(&[]).await;
        let (status, body) = read(
            h.post_send("pushgate-emulator", None, &json!({"message": message("k")}))
                .await,
        )
        .await;
        assert_fcm_error(status, &body, 401, "UNAUTHENTICATED", None);
        assert!(
            body["error"]["message"]
                .as_str()
                .unwrap_or_default()
                .starts_with("Request had invalid authentication")
        );
        assert_eq!(h.emulator.stats().rejected.get("UNAUTHENTICATED"), Some(&1));
    }

    #[tokio::test]
    async fn send_with_a_token_not_issued_here_is_unauthenticated() {
        let h = spawn(&[]).await;
        let response = h
            .post_send(
                "pushgate-emulator",
                Some("ya29.forged"),
                &json!({"message": message("k")}),
            )
            .await;
        let (status, body) = read(response).await;
        assert_fcm_error(status, &body, 401, "UNAUTHENTICATED", None);
        assert_eq!(h.emulator.stats().accepted, 0);
    }

    #[tokio::test]
    async fn send_with_an_expired_token_is_unauthenticated() {
        let h = spawn(&["--token-ttl", "1"]).await;
        let (status, grant) = h.grant(&h.good_jwt()).await;
        assert_eq!((status, &grant["expires_in"]), (200, &json!(1)));
        let token = grant["access_token"]
            .as_str()
            .expect("access_token")
            .to_owned();
        let deadline = Instant::now() + Duration::from_secs(10);
        let body = loop {
            let response = h
                .post_send(
                    "pushgate-emulator",
                    Some(&token),
                    &json!({"message": message("k")}),
                )
                .await;
            let (status, body) = read(response).await;
            if status == 401 {
                break body;
            }
            assert_eq!(status, 200, "{body}");
            assert!(
                Instant::now() < deadline,
                "token still accepted 10 s after a 1 s TTL"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        assert_fcm_error(401, &body, 401, "UNAUTHENTICATED", None);
    }
}
