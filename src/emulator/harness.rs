//! A client that meets the emulator as the gateway does: parsed command lines, shared RSA keys,
//! JWTs built like Google's client libraries, grants and sends, and the assertions on FCM's
//! error envelope.

use super::*;
use clap::Parser as _;
use reqwest::header::CONTENT_TYPE;
use rsa::pkcs1v15::SigningKey;
use rsa::pkcs8::DecodePrivateKey as _;
use rsa::signature::{SignatureEncoding as _, Signer as _};
use std::sync::OnceLock;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

use super::token::JWT_BEARER_GRANT;
#[derive(clap::Parser)]
pub(super) struct Cli {
    #[command(flatten)]
    pub(super) args: EmulatorArgs,
}

/// Emulator arguments as the command line would give them, on an ephemeral port.
pub(super) fn args(extra: &[&str]) -> EmulatorArgs {
    Cli::parse_from(["emulator", "--listen", "127.0.0.1:0"].iter().chain(extra)).args
}

/// Keys are generated once per test binary: 2048-bit generation dominates start-up.
pub(super) fn test_key(slot: usize) -> RsaPrivateKey {
    static KEYS: [OnceLock<RsaPrivateKey>; 2] = [OnceLock::new(), OnceLock::new()];
    let generate =
        || RsaPrivateKey::new(&mut rsa::rand_core::OsRng, 2048).expect("generating a test key");
    KEYS[slot].get_or_init(generate).clone()
}

pub(super) fn client(h2c: bool) -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let builder = reqwest::Client::builder();
    let builder = if h2c {
        builder.http2_prior_knowledge()
    } else {
        builder
    };
    builder.build().expect("building the HTTP client")
}

pub(super) struct Harness {
    pub(super) emulator: Emulator,
    pub(super) service_account: Value,
    /// The service account's key, read back from its PEM as a sender would.
    pub(super) key: RsaPrivateKey,
    pub(super) http: reqwest::Client,
}

pub(super) async fn spawn(extra: &[&str]) -> Harness {
    let emulator = Emulator::start_with_key(args(extra), test_key(0))
        .await
        .expect("starting the emulator");
    Harness::new(emulator, client(false))
}

impl Harness {
    pub(super) fn new(emulator: Emulator, http: reqwest::Client) -> Harness {
        let service_account: Value =
            serde_json::from_str(&emulator.service_account_json()).expect("SA JSON");
        let pem = service_account["private_key"]
            .as_str()
            .expect("private_key");
        let key = RsaPrivateKey::from_pkcs8_pem(pem).expect("private_key is PKCS#8 PEM");
        Harness {
            emulator,
            service_account,
            key,
            http,
        }
    }

    pub(super) fn url(&self, path: &str) -> String {
        format!("{}{path}", self.emulator.base_url())
    }

    pub(super) fn header(&self) -> Value {
        json!({"alg": "RS256", "typ": "JWT", "kid": self.service_account["private_key_id"]})
    }

    pub(super) fn claims(&self) -> Value {
        let now = unix_now();
        json!({
            "iss": self.service_account["client_email"],
            "scope": FCM_SCOPE,
            "aud": self.service_account["token_uri"],
            "iat": now,
            "exp": now + 3600,
        })
    }

    /// A JWT as Google's client libraries build it, from the given parts.
    pub(super) fn jwt(&self, header: Value, claims: Value, key: &RsaPrivateKey) -> String {
        let b64 = |v: &Value| URL_SAFE_NO_PAD.encode(v.to_string());
        let signing_input = format!("{}.{}", b64(&header), b64(&claims));
        let signature = SigningKey::<Sha256>::new(key.clone()).sign(signing_input.as_bytes());
        format!(
            "{signing_input}.{}",
            URL_SAFE_NO_PAD.encode(signature.to_bytes())
        )
    }

    pub(super) fn good_jwt(&self) -> String {
        self.jwt(self.header(), self.claims(), &self.key)
    }

    pub(super) async fn grant(&self, assertion: &str) -> (u16, Value) {
        let form = [("grant_type", JWT_BEARER_GRANT), ("assertion", assertion)];
        let response = self
            .http
            .post(self.url("/token"))
            .form(&form)
            .send()
            .await
            .expect("POST /token");
        read(response).await
    }

    pub(super) async fn token(&self) -> String {
        let (status, body) = self.grant(&self.good_jwt()).await;
        assert_eq!(status, 200, "{body}");
        body["access_token"]
            .as_str()
            .expect("access_token")
            .to_owned()
    }

    pub(super) async fn post_send(
        &self,
        project: &str,
        bearer: Option<&str>,
        body: &Value,
    ) -> reqwest::Response {
        let mut request = (self
            .http
            .post(self.url(&format!("/v1/projects/{project}/messages:send"))))
        .header(CONTENT_TYPE, "application/json")
        .body(body.to_string());
        if let Some(token) = bearer {
            request = request.bearer_auth(token);
        }
        request.send().await.expect("POST messages:send")
    }

    /// Sends `message` with a fresh valid token to the right project.
    pub(super) async fn send(&self, message: Value) -> (u16, Value) {
        let token = self.token().await;
        read(
            self.post_send(
                "pushgate-emulator",
                Some(&token),
                &json!({"message": message}),
            )
            .await,
        )
        .await
    }

    /// `GET /stats`, as its JSON.
    pub(super) async fn stats_json(&self) -> Value {
        let response = (self.http.get(self.url("/stats")).send().await).expect("GET /stats");
        read(response).await.1
    }

    pub(super) async fn assert_invalid(&self, message: Value, needle: &str) {
        let (status, body) = self.send(message).await;
        assert_fcm_error(
            status,
            &body,
            400,
            "INVALID_ARGUMENT",
            Some("INVALID_ARGUMENT"),
        );
        let text = body["error"]["message"].as_str().unwrap_or_default();
        assert!(
            text.contains(needle),
            "message {text:?} should name {needle:?}"
        );
    }

    pub(super) async fn assert_grant_rejected(&self, assertion: &str, needle: &str) {
        let (status, body) = self.grant(assertion).await;
        assert_eq!(status, 400, "{body}");
        assert_eq!(body["error"], "invalid_grant");
        let reason = body["error_description"].as_str().unwrap_or_default();
        assert!(
            reason.contains(needle),
            "reason {reason:?} should name {needle:?}"
        );
        assert_eq!(self.emulator.stats().tokens_issued, 0);
        assert_eq!(
            self.emulator.stats().rejected.get("invalid_grant"),
            Some(&1)
        );
    }
}

pub(super) async fn read(response: reqwest::Response) -> (u16, Value) {
    let status = response.status().as_u16();
    let text = response.text().await.expect("reading the body");
    (
        status,
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("body {text:?} is not JSON: {e}")),
    )
}

pub(super) fn assert_fcm_error(
    status: u16,
    body: &Value,
    http: u16,
    canonical: &str,
    code: Option<&str>,
) {
    assert_eq!(status, http, "{body}");
    assert_eq!(body["error"]["code"], http, "{body}");
    assert_eq!(body["error"]["status"], canonical, "{body}");
    assert!(body["error"]["message"].is_string(), "{body}");
    let Some(code) = code else {
        assert_eq!(body["error"].get("details"), None, "{body}");
        return;
    };
    let details = body["error"]["details"].as_array().expect("details");
    assert_eq!(
        details[0],
        json!({"@type": "type.googleapis.com/google.firebase.fcm.v1.FcmError", "errorCode": code}),
        "{body}"
    );
    // FCM says which quota a QUOTA_EXCEEDED hit, and adds nothing to other errors.
    let others: Vec<&Value> = details[1..].iter().map(|d| &d["@type"]).collect();
    let expected: &[&str] = if code == "QUOTA_EXCEEDED" {
        &["type.googleapis.com/google.rpc.QuotaFailure"]
    } else {
        &[]
    };
    assert_eq!(others, expected, "{body}");
}

/// Asserts a 429 QUOTA_EXCEEDED whose QuotaFailure names `subject`; returns its description.
pub(super) fn assert_quota_answer(status: u16, body: &Value, subject: &str) -> String {
    assert_fcm_error(
        status,
        body,
        429,
        "RESOURCE_EXHAUSTED",
        Some("QUOTA_EXCEEDED"),
    );
    let (named, description) = quota_violation(body);
    assert_eq!(named, subject, "{body}");
    description
}

/// The `(subject, description)` of a QUOTA_EXCEEDED answer's one QuotaFailure violation.
pub(super) fn quota_violation(body: &Value) -> (String, String) {
    let details = body["error"]["details"].as_array().expect("details");
    let failure = (details.iter())
        .find(|d| d["@type"] == "type.googleapis.com/google.rpc.QuotaFailure")
        .unwrap_or_else(|| panic!("no QuotaFailure in {body}"));
    let violations = failure["violations"].as_array().expect("violations");
    assert_eq!(violations.len(), 1, "{body}");
    let text = |key: &str| violations[0][key].as_str().expect(key).to_owned();
    (text("subject"), text("description"))
}

pub(super) fn message(unique_key: &str) -> Value {
    json!({
        "token": "device-1",
        "notification": {"title": "Debit", "body": "CHF 12.00 at Migros"},
        "data": {"uniqueKey": unique_key, "amount": "12.00"},
        "android": {"priority": "high", "ttl": "3600s", "collapse_key": "debit"},
        "apns": {"headers": {"apns-priority": "10"}, "payload": {"aps": {"sound": "default"}}},
        "fcm_options": {"analytics_label": "debit"},
    })
}
