//! Provider tokens (`authorization: bearer <jwt>`): the ES256 JWT checked part by part, and
//! Apple's reuse discipline.
//!
//! Invariant: the emulator holds its one key to one sequence of tokens, as one gateway whose
//! connections share a token makes it. A token is accepted only while its `iat` is at most
//! `max_age` old (else 403 ExpiredProviderToken); a token not seen before (a refresh) is
//! accepted only if the previous new one was first accepted at least `min_age` ago (else 429
//! TooManyProviderTokenUpdates, and it is not remembered, so it keeps being refused until then).
//! Tokens already accepted stay valid beside a newer one until they age out, as requests in
//! flight during a refresh still carry the old one. Remembered tokens are forgotten once
//! expired, so the table stays small. A token byte for byte equal to one accepted before
//! passed every check but its age then, so only its age is checked again: verifying ES256
//! on every request cost the emulator more CPU per send than the whole gateway
//! (docs/BENCHMARKS.md, "APNs beside FCM").

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hyper::header::{AUTHORIZATION, HeaderMap};
use p256::ecdsa::signature::Verifier as _;
use p256::ecdsa::{Signature, VerifyingKey};
use serde_json::{Map, Value};

use super::reason::{Reason, Refusal};

/// How far in the future an `iat` may be (the sender's clock ahead of ours).
const CLOCK_SKEW_MS: i64 = 60_000;

/// The key's identity and the tokens accepted so far.
pub(super) struct ProviderTokens {
    /// The JWT header's `kid` must be this.
    key_id: String,
    /// The JWT claim `iss` must be this.
    team_id: String,
    verifying_key: VerifyingKey,
    /// Older tokens (by `iat`) are ExpiredProviderToken.
    max_age: Duration,
    /// The least time between two new tokens; zero turns the check off.
    min_age: Duration,
    table: Mutex<Table>,
}

#[derive(Default)]
struct Table {
    /// Accepted tokens → their `iat` (unix seconds).
    seen: HashMap<String, i64>,
    /// When the newest token was first accepted.
    newest: Option<Instant>,
}

/// How an accepted token stood.
#[derive(Debug, PartialEq)]
pub(super) enum Admitted {
    /// Accepted before.
    Known,
    /// The key's first token.
    First,
    /// A refresh, `interval` after the previous new token.
    Update { interval: Duration },
}

impl ProviderTokens {
    pub(super) fn new(
        key_id: String,
        team_id: String,
        verifying_key: VerifyingKey,
        max_age: Duration,
        min_age: Duration,
    ) -> ProviderTokens {
        ProviderTokens {
            key_id,
            team_id,
            verifying_key,
            max_age,
            min_age,
            table: Mutex::default(),
        }
    }

    /// The request's provider token, checked at `now_ms` (unix ms) / `now`, and admitted.
    pub(super) fn check(
        &self,
        headers: &HeaderMap,
        now_ms: i64,
        now: Instant,
    ) -> Result<Admitted, Refusal> {
        let jwt = bearer(headers)?;
        if let Some(iat) = self.accepted_iat(jwt) {
            self.check_age(iat, now_ms)?;
            return Ok(Admitted::Known);
        }
        let iat = self.verify(jwt, now_ms)?;
        self.admit(jwt, iat, now_ms, now)
    }

    /// The `iat` of `jwt` if exactly this token was accepted before.
    fn accepted_iat(&self, jwt: &str) -> Option<i64> {
        let table = self.table.lock().unwrap_or_else(PoisonError::into_inner);
        table.seen.get(jwt).copied()
    }

    /// A token issued at `iat` (unix seconds) is at most `max_age` old at `now_ms`.
    fn check_age(&self, iat: i64, now_ms: i64) -> Result<(), Refusal> {
        let age_ms = now_ms - iat.saturating_mul(1000);
        if age_ms > self.max_age.as_millis() as i64 {
            return Err(Refusal::new(
                Reason::ExpiredProviderToken,
                format!(
                    "JWT iat {iat} is {:.1}s old, over the {}s a token may be used",
                    age_ms as f64 / 1000.0,
                    self.max_age.as_secs()
                ),
            ));
        }
        Ok(())
    }

    /// Checks one JWT; `Ok` is its `iat`.
    fn verify(&self, jwt: &str, now_ms: i64) -> Result<i64, Refusal> {
        let invalid = |detail: String| Refusal::new(Reason::InvalidProviderToken, detail);
        let parts: Vec<&str> = jwt.split('.').collect();
        let [header_b64, claims_b64, signature_b64] = parts[..] else {
            return Err(invalid(format!(
                "the provider token must be a JWT of 3 parts, got {}",
                parts.len()
            )));
        };
        let header = jwt_json(header_b64, "header").map_err(invalid)?;
        expect(&header, "header alg", "ES256").map_err(invalid)?;
        expect(&header, "header kid", &self.key_id).map_err(invalid)?;

        let signature = URL_SAFE_NO_PAD.decode(signature_b64).map_err(|e| {
            invalid(format!(
                "JWT signature is not base64url without padding: {e}"
            ))
        })?;
        // JOSE form: r || s, 32 bytes each; a DER signature (70-72 bytes) is refused here.
        let signature = Signature::from_slice(&signature).map_err(|_| {
            invalid(format!(
                "JWT signature must be ES256 in JOSE form (r || s, 64 bytes), got {} bytes",
                signature.len()
            ))
        })?;
        self.verifying_key
            .verify(format!("{header_b64}.{claims_b64}").as_bytes(), &signature)
            .map_err(|_| invalid("invalid JWT signature: not signed by the key of kid".into()))?;

        let claims = jwt_json(claims_b64, "claims").map_err(invalid)?;
        expect(&claims, "claim iss", &self.team_id).map_err(invalid)?;
        let iat = (claims.get("iat").and_then(Value::as_i64))
            .ok_or_else(|| invalid("JWT claim iat missing or not an integer".into()))?;
        let age_ms = now_ms - iat.saturating_mul(1000);
        if age_ms < -CLOCK_SKEW_MS {
            return Err(invalid(format!(
                "JWT iat {iat} is {}s in the future (clock skew over 60s)",
                -age_ms / 1000
            )));
        }
        self.check_age(iat, now_ms)?;
        Ok(iat)
    }

    fn admit(&self, jwt: &str, iat: i64, now_ms: i64, now: Instant) -> Result<Admitted, Refusal> {
        let mut table = self.table.lock().unwrap_or_else(PoisonError::into_inner);
        if table.seen.contains_key(jwt) {
            return Ok(Admitted::Known);
        }
        let admitted = match table.newest {
            None => Admitted::First,
            Some(newest) => {
                let interval = now.saturating_duration_since(newest);
                if interval < self.min_age {
                    return Err(Refusal::new(
                        Reason::TooManyProviderTokenUpdates,
                        format!(
                            "a new provider token {:.1}s after the previous one; reuse a token \
                             for at least {}s",
                            interval.as_secs_f64(),
                            self.min_age.as_secs()
                        ),
                    ));
                }
                Admitted::Update { interval }
            }
        };
        let max_age_ms = self.max_age.as_millis() as i64;
        table
            .seen
            .retain(|_, seen_iat| now_ms - seen_iat.saturating_mul(1000) <= max_age_ms);
        table.seen.insert(jwt.to_owned(), iat);
        table.newest = Some(now);
        Ok(admitted)
    }
}

/// The JWT of `authorization: bearer <jwt>` (the scheme in any case, as HTTP allows).
fn bearer(headers: &HeaderMap) -> Result<&str, Refusal> {
    let Some(value) = headers.get(AUTHORIZATION) else {
        return Err(Refusal::new(
            Reason::MissingProviderToken,
            "no authorization header",
        ));
    };
    let value = value.to_str().map_err(|_| {
        Refusal::new(
            Reason::InvalidProviderToken,
            "the authorization header is not ASCII",
        )
    })?;
    let (scheme, token) = value.split_once(' ').unwrap_or((value, ""));
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Err(Refusal::new(
            Reason::InvalidProviderToken,
            format!("authorization must be \"bearer <provider token>\", got scheme {scheme:?}"),
        ));
    }
    match token.trim() {
        "" => Err(Refusal::new(
            Reason::MissingProviderToken,
            "authorization: bearer without a token",
        )),
        token => Ok(token),
    }
}

/// Checks one string member of a JWT part; `what` is "header kid", "claim iss" and the like.
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

#[cfg(test)]
mod tests {
    use crate::emulator::apns::harness::*;
    use p256::ecdsa::SigningKey;
    use serde_json::json;
    use std::time::{Duration, Instant};

    fn now_secs() -> i64 {
        crate::clock::now_ms() / 1000
    }

    /// Sends the harness's push with `jwt` and asserts 403 InvalidProviderToken naming `needle`.
    async fn assert_invalid(h: &Harness, jwt: &str, needle: &str) {
        let answer = h
            .assert_refused(h.push().bearer(jwt), 403, "InvalidProviderToken")
            .await;
        assert!(
            answer.detail().contains(needle),
            "detail {:?} should name {needle:?}",
            answer.detail()
        );
        assert_eq!(h.emulator.stats().tokens_seen, 0, "a refused token counted");
    }

    #[tokio::test]
    async fn a_push_without_a_provider_token_is_missing_provider_token() {
        let h = spawn(&[]).await;
        h.assert_refused(
            h.push().without("authorization"),
            403,
            "MissingProviderToken",
        )
        .await;
        h.assert_refused(
            h.push().header("authorization", "bearer "),
            403,
            "MissingProviderToken",
        )
        .await;
    }

    #[tokio::test]
    async fn the_bearer_scheme_is_required_in_any_case() {
        let h = spawn(&[]).await;
        let basic = h
            .push()
            .header("authorization", &format!("basic {}", h.jwt));
        h.assert_refused(basic, 403, "InvalidProviderToken").await;
        let capital = h
            .push()
            .header("authorization", &format!("Bearer {}", h.jwt));
        h.send(capital).await.assert_accepted();
    }

    #[tokio::test]
    async fn a_token_signed_by_another_key_is_invalid() {
        let h = spawn(&[]).await;
        let stranger = SigningKey::random(&mut p256::elliptic_curve::rand_core::OsRng);
        let jwt = h.token_signed_by(h.header(), h.claims(), &stranger);
        assert_invalid(&h, &jwt, "signature").await;
    }

    #[tokio::test]
    async fn an_alg_other_than_es256_is_invalid() {
        let h = spawn(&[]).await;
        for alg in ["HS256", "ES384", "none"] {
            let mut header = h.header();
            header["alg"] = json!(alg);
            assert_invalid(&h, &h.token(header, h.claims()), "alg").await;
        }
    }

    #[tokio::test]
    async fn a_kid_other_than_the_key_id_is_invalid() {
        let h = spawn(&[]).await;
        let mut header = h.header();
        header["kid"] = json!("OTHERKEY01");
        assert_invalid(&h, &h.token(header, h.claims()), "kid").await;
        let mut header = h.header();
        header.as_object_mut().expect("object").remove("kid");
        assert_invalid(&h, &h.token(header, h.claims()), "kid missing").await;
    }

    #[tokio::test]
    async fn an_iss_other_than_the_team_id_is_invalid() {
        let h = spawn(&[]).await;
        let mut claims = h.claims();
        claims["iss"] = json!("OTHERTEAM1");
        assert_invalid(&h, &h.token(h.header(), claims), "iss").await;
    }

    #[tokio::test]
    async fn a_token_without_an_integer_iat_is_invalid() {
        let h = spawn(&[]).await;
        let claims = json!({"iss": h.emulator.team_id()});
        assert_invalid(&h, &h.token(h.header(), claims), "iat").await;
        let claims = json!({"iss": h.emulator.team_id(), "iat": now_secs().to_string()});
        assert_invalid(&h, &h.token(h.header(), claims), "iat").await;
    }

    #[tokio::test]
    async fn an_iat_over_a_minute_in_the_future_is_invalid() {
        let h = spawn(&[]).await;
        let mut claims = h.claims();
        claims["iat"] = json!(now_secs() + 120);
        assert_invalid(&h, &h.token(h.header(), claims), "future").await;
    }

    #[tokio::test]
    async fn a_der_signature_is_invalid_only_jose_form_verifies() {
        let h = spawn(&[]).await;
        use base64::Engine as _;
        use base64::engine::general_purpose::URL_SAFE_NO_PAD;
        use p256::ecdsa::Signature;
        use p256::ecdsa::signature::Signer as _;
        let b64 = |v: &serde_json::Value| URL_SAFE_NO_PAD.encode(v.to_string());
        let input = format!("{}.{}", b64(&h.header()), b64(&h.claims()));
        let signature: Signature = h.key.sign(input.as_bytes());
        let der = URL_SAFE_NO_PAD.encode(signature.to_der().as_bytes());
        assert_invalid(&h, &format!("{input}.{der}"), "JOSE form").await;
    }

    #[tokio::test]
    async fn a_token_that_is_no_jwt_is_invalid() {
        let h = spawn(&[]).await;
        assert_invalid(&h, "abc.def", "3 parts").await;
        assert_invalid(&h, "a.b.c", "header").await;
    }

    #[tokio::test]
    async fn a_token_older_than_max_age_is_expired() {
        let h = spawn(&["--token-max-age", "2", "--token-min-age", "0"]).await;
        let mut claims = h.claims();
        claims["iat"] = json!(now_secs() - 4);
        let old = h.token(h.header(), claims);
        let answer = h
            .assert_refused(h.push().bearer(&old), 403, "ExpiredProviderToken")
            .await;
        assert!(answer.detail().contains("old"), "{}", answer.detail());
        // The default age is Apple's hour.
        let h = spawn(&[]).await;
        let mut claims = h.claims();
        claims["iat"] = json!(now_secs() - 3590);
        h.send(h.push().bearer(&h.token(h.header(), claims)))
            .await
            .assert_accepted();
        let mut claims = h.claims();
        claims["iat"] = json!(now_secs() - 3610);
        let too_old = h.token(h.header(), claims);
        h.assert_refused(h.push().bearer(&too_old), 403, "ExpiredProviderToken")
            .await;
    }

    #[tokio::test]
    async fn a_token_in_use_is_refused_once_it_ages_past_max_age() {
        let h = spawn(&["--token-max-age", "1", "--token-min-age", "0"]).await;
        h.send(h.push()).await.assert_accepted();
        let deadline = Instant::now() + Duration::from_secs(10);
        let answer = loop {
            let answer = h.send(h.push()).await;
            if answer.status != 200 {
                break answer;
            }
            assert!(
                Instant::now() < deadline,
                "token still accepted 10 s after a 1 s max age"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        answer.assert_refused(403, "ExpiredProviderToken");
    }

    #[tokio::test]
    async fn one_token_reused_across_many_pushes_is_one_token_seen() {
        let h = spawn(&[]).await;
        for _ in 0..50 {
            h.send(h.push()).await.assert_accepted();
        }
        let stats = h.emulator.stats();
        assert_eq!(
            (stats.accepted, stats.tokens_seen, stats.token_updates),
            (50, 1, 0)
        );
    }

    #[tokio::test]
    async fn an_accepted_tokens_header_and_claims_under_another_signature_stay_invalid() {
        // Only the exact bytes of an accepted token skip the signature check.
        let h = spawn(&[]).await;
        h.send(h.push()).await.assert_accepted();
        let signed = h.jwt.rsplit_once('.').expect("a JWT").0;
        let stranger = SigningKey::random(&mut p256::elliptic_curve::rand_core::OsRng);
        let forged: p256::ecdsa::Signature =
            p256::ecdsa::signature::Signer::sign(&stranger, signed.as_bytes());
        use base64::Engine as _;
        let signature = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(forged.to_bytes());
        let forged = format!("{signed}.{signature}");
        let answer = h
            .assert_refused(h.push().bearer(&forged), 403, "InvalidProviderToken")
            .await;
        assert!(answer.detail().contains("signature"), "{}", answer.detail());
        h.send(h.push()).await.assert_accepted();
        assert_eq!(h.emulator.stats().tokens_seen, 1);
    }

    #[tokio::test]
    async fn a_new_token_within_min_age_is_too_many_updates_until_min_age_has_passed() {
        let h = spawn(&["--token-min-age", "1", "--token-max-age", "60"]).await;
        let first_accepted = Instant::now();
        h.send(h.push()).await.assert_accepted();
        // A refresh a moment later: a different token (its iat moved on).
        let mut claims = h.claims();
        claims["iat"] = json!(now_secs() + 1);
        let fresh = h.token(h.header(), claims);
        assert_ne!(fresh, h.jwt);
        h.assert_refused(h.push().bearer(&fresh), 429, "TooManyProviderTokenUpdates")
            .await;
        // The token in use keeps working.
        h.send(h.push()).await.assert_accepted();
        // Once min-age has passed the refresh is taken, and the old token still works
        // beside it (requests in flight during a refresh carry it).
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let answer = h.send(h.push().bearer(&fresh)).await;
            if answer.status == 200 {
                break;
            }
            answer.assert_refused(429, "TooManyProviderTokenUpdates");
            assert!(
                Instant::now() < deadline,
                "refresh still refused after 10 s"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert!(first_accepted.elapsed() >= Duration::from_secs(1));
        h.send(h.push()).await.assert_accepted();
        let stats = h.emulator.stats();
        assert_eq!(
            (stats.tokens_seen, stats.token_updates),
            (2, 1),
            "{stats:?}"
        );
        let [interval] = stats.refresh_intervals_ms[..] else {
            panic!("one refresh interval: {stats:?}");
        };
        assert!((1000..10_000).contains(&interval), "{interval} ms");
        assert!(stats.rejected["TooManyProviderTokenUpdates"] >= 1);
    }

    #[tokio::test]
    async fn with_the_default_min_age_a_second_token_is_refused() {
        let h = spawn(&[]).await;
        h.send(h.push()).await.assert_accepted();
        let mut claims = h.claims();
        claims["iat"] = json!(now_secs() - 1);
        let other = h.token(h.header(), claims);
        let answer = h
            .assert_refused(h.push().bearer(&other), 429, "TooManyProviderTokenUpdates")
            .await;
        assert!(answer.detail().contains("1200s"), "{}", answer.detail());
    }

    #[tokio::test]
    async fn min_age_zero_takes_any_refresh() {
        let h = spawn(&["--token-min-age", "0"]).await;
        for age in 0..3 {
            let mut claims = h.claims();
            claims["iat"] = json!(now_secs() - age);
            h.send(h.push().bearer(&h.token(h.header(), claims)))
                .await
                .assert_accepted();
        }
        let stats = h.emulator.stats();
        assert_eq!((stats.tokens_seen, stats.token_updates), (3, 2));
    }
}
