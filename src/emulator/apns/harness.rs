//! A client that meets the APNs emulator as the gateway does: parsed command lines, the key
//! read back from the `.p8` the emulator wrote, ES256 provider tokens signed with it, pushes
//! over h2c, and the assertions on Apple's answers.

use super::*;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use clap::Parser as _;
use p256::ecdsa::signature::Signer as _;
use p256::ecdsa::{Signature, SigningKey};
use p256::pkcs8::DecodePrivateKey as _;
use reqwest::header::HeaderMap;
use serde_json::json;

/// A 32-byte device token as iOS hands it out, in hex.
pub(super) const DEVICE: &str = "5e1f0c3a9b7d24e68f01a2b3c4d5e6f708192a3b4c5d6e7f8091a2b3c4d5e6f7";

#[derive(clap::Parser)]
pub(super) struct Cli {
    #[command(flatten)]
    pub(super) args: ApnsEmulatorArgs,
}

/// Emulator arguments as the command line would give them, on an ephemeral port.
pub(super) fn args(extra: &[&str]) -> ApnsEmulatorArgs {
    Cli::parse_from(
        ["apns-emulator", "--listen", "127.0.0.1:0"]
            .iter()
            .chain(extra),
    )
    .args
}

/// An HTTP/2 client without TLS (prior knowledge), as the gateway speaks to h2c.
pub(super) fn client() -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    (reqwest::Client::builder().http2_prior_knowledge())
        .build()
        .expect("building the HTTP client")
}

pub(super) struct Harness {
    pub(super) emulator: ApnsEmulator,
    /// The key read back from the `.p8` the emulator wrote, as the gateway's `key_file`.
    pub(super) key: SigningKey,
    /// One provider token, made at start and reused as the gateway reuses its token.
    pub(super) jwt: String,
    pub(super) http: reqwest::Client,
    /// Holds the `.p8`.
    pub(super) dir: tempfile::TempDir,
}

/// An emulator with `extra` flags that writes its key to a temp dir, and a client for it.
pub(super) async fn spawn(extra: &[&str]) -> Harness {
    let dir = tempfile::tempdir().expect("temp dir");
    let key_path = dir.path().join("AuthKey_EMUKEY0001.p8");
    let key_flag = ["--write-key", key_path.to_str().expect("utf-8 path")];
    let flags: Vec<&str> = key_flag.iter().chain(extra).copied().collect();
    let emulator = ApnsEmulator::start(args(&flags))
        .await
        .expect("starting the APNs emulator");
    Harness::new(emulator, client(), dir, &key_path)
}

impl Harness {
    pub(super) fn new(
        emulator: ApnsEmulator,
        http: reqwest::Client,
        dir: tempfile::TempDir,
        key_path: &std::path::Path,
    ) -> Harness {
        let pem = std::fs::read_to_string(key_path).expect("the .p8 is written at start");
        let key = SigningKey::from_pkcs8_pem(&pem).expect("the .p8 is PKCS#8 PEM P-256");
        let mut harness = Harness {
            emulator,
            key,
            jwt: String::new(),
            http,
            dir,
        };
        harness.jwt = harness.token(harness.header(), harness.claims());
        harness
    }

    pub(super) fn url(&self, path: &str) -> String {
        format!("{}{path}", self.emulator.base_url())
    }

    pub(super) fn header(&self) -> Value {
        json!({"alg": "ES256", "kid": self.emulator.key_id()})
    }

    pub(super) fn claims(&self) -> Value {
        json!({"iss": self.emulator.team_id(), "iat": crate::clock::now_ms() / 1000})
    }

    /// A provider token from the given parts, signed with the emulator's key.
    pub(super) fn token(&self, header: Value, claims: Value) -> String {
        self.token_signed_by(header, claims, &self.key)
    }

    /// A provider token as a gateway builds it: ES256 in JOSE form (r || s).
    pub(super) fn token_signed_by(&self, header: Value, claims: Value, key: &SigningKey) -> String {
        let b64 = |v: &Value| URL_SAFE_NO_PAD.encode(v.to_string());
        let signing_input = format!("{}.{}", b64(&header), b64(&claims));
        let signature: Signature = key.sign(signing_input.as_bytes());
        format!(
            "{signing_input}.{}",
            URL_SAFE_NO_PAD.encode(signature.to_bytes())
        )
    }

    /// A valid push to [`DEVICE`] with the harness's token, to change before sending.
    pub(super) fn push(&self) -> Push {
        Push {
            device: DEVICE.to_owned(),
            headers: vec![
                ("authorization".into(), format!("bearer {}", self.jwt)),
                ("apns-topic".into(), self.emulator.topic().to_owned()),
                ("apns-push-type".into(), "alert".into()),
                ("apns-priority".into(), "10".into()),
            ],
            body: payload("k1").to_string().into_bytes(),
        }
    }

    pub(super) async fn send(&self, push: Push) -> Answer {
        let mut request = (self.http)
            .post(self.url(&format!("/3/device/{}", push.device)))
            .body(push.body);
        for (name, value) in &push.headers {
            // reqwest appends, so a header given twice is sent twice.
            request = request.header(name, value);
        }
        Answer::read(request.send().await.expect("POST /3/device")).await
    }

    /// `GET /stats`, as its JSON.
    pub(super) async fn stats_json(&self) -> Value {
        let response = (self.http.get(self.url("/stats")).send().await).expect("GET /stats");
        let text = response.text().await.expect("reading /stats");
        serde_json::from_str(&text).expect("/stats is JSON")
    }

    /// Sends `push` and asserts Apple's refusal with `reason`.
    pub(super) async fn assert_refused(&self, push: Push, status: u16, reason: &str) -> Answer {
        let answer = self.send(push).await;
        answer.assert_refused(status, reason);
        answer
    }
}

/// One request before it is sent.
pub(super) struct Push {
    pub(super) device: String,
    pub(super) headers: Vec<(String, String)>,
    pub(super) body: Vec<u8>,
}

impl Push {
    /// Sets `name` to `value`, replacing the default.
    pub(super) fn header(self, name: &str, value: &str) -> Push {
        self.without(name).also(name, value)
    }

    /// Adds `name: value` beside any value it has.
    pub(super) fn also(mut self, name: &str, value: &str) -> Push {
        self.headers.push((name.to_owned(), value.to_owned()));
        self
    }

    pub(super) fn without(mut self, name: &str) -> Push {
        self.headers.retain(|(n, _)| n != name);
        self
    }

    pub(super) fn to(mut self, device: &str) -> Push {
        device.clone_into(&mut self.device);
        self
    }

    pub(super) fn body(mut self, body: impl Into<Vec<u8>>) -> Push {
        self.body = body.into();
        self
    }

    pub(super) fn bearer(self, jwt: &str) -> Push {
        self.header("authorization", &format!("bearer {jwt}"))
    }
}

/// An answer, read whole.
pub(super) struct Answer {
    pub(super) status: u16,
    pub(super) version: reqwest::Version,
    pub(super) headers: HeaderMap,
    pub(super) text: String,
}

impl Answer {
    pub(super) async fn read(response: reqwest::Response) -> Answer {
        let (status, version) = (response.status().as_u16(), response.version());
        let headers = response.headers().clone();
        let text = response.text().await.expect("reading the body");
        Answer {
            status,
            version,
            headers,
            text,
        }
    }

    pub(super) fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// Which rule fired (`x-emulator-detail`).
    pub(super) fn detail(&self) -> &str {
        self.header("x-emulator-detail").unwrap_or_default()
    }

    pub(super) fn json(&self) -> Value {
        serde_json::from_str(&self.text)
            .unwrap_or_else(|e| panic!("body {:?} is not JSON: {e}", self.text))
    }

    /// A refusal in Apple's shape: the status, `{"reason"}` (plus `timestamp` for 410) and an
    /// `apns-id`.
    pub(super) fn assert_refused(&self, status: u16, reason: &str) {
        let what = format!("{} {} ({})", self.status, self.text, self.detail());
        assert_eq!(self.status, status, "{what}");
        let body = self.json();
        assert_eq!(body["reason"], reason, "{what}");
        let keys: Vec<&String> = body.as_object().expect("an object").keys().collect();
        let expected: &[&str] = if status == 410 {
            &["reason", "timestamp"]
        } else {
            &["reason"]
        };
        assert_eq!(keys, expected, "{what}");
        assert!(
            self.header("apns-id").is_some_and(request::is_uuid),
            "{what}"
        );
    }

    pub(super) fn assert_accepted(&self) {
        assert_eq!(
            (self.status, self.text.as_str()),
            (200, ""),
            "{}",
            self.detail()
        );
        assert!(
            self.header("apns-id").is_some_and(request::is_uuid),
            "{:?}",
            self.headers
        );
    }
}

/// A payload as the gateway builds it: `aps` with an alert, and the push's data as custom
/// keys beside it.
pub(super) fn payload(unique_key: &str) -> Value {
    json!({
        "aps": {
            "alert": {"title": "Debit", "body": "KRW 12,000 at GS25"},
            "sound": "default",
            "badge": 1,
            "mutable-content": 1,
        },
        "uniqueKey": unique_key,
        "amount": "12000",
    })
}
