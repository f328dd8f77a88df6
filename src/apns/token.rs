//! Who pushgate is to Apple: the `.p8` signing key and the provider token (an ES256 JWT)
//! signed with it.
//!
//! Invariants: one token is used by every send for `token_refresh` (Apple wants 20 to 60
//! minutes: an older one gets 403 ExpiredProviderToken, replacing it more often 429
//! TooManyProviderTokenUpdates); one signing happens at a time, and a caller that waited
//! for it uses the token it produced instead of signing again; a token Apple refused is
//! replaced only while it is still the current one, and no sooner than
//! [`ProviderTokens::forced_spacing`] after the last such replacement. The key never
//! prints: neither `Debug` nor any error shows it.

use std::path::Path;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use p256::ecdsa::signature::RandomizedSigner as _;
use p256::ecdsa::{Signature, SigningKey, VerifyingKey};
use p256::elliptic_curve::rand_core::OsRng;
use p256::pkcs8::DecodePrivateKey as _;
use serde::Serialize;

use super::ApnsError;
use crate::clock::now_ms;

/// Apple's own bound on replacing a token ("no more than once every 20 minutes").
const APPLE_MIN_REFRESH: Duration = Duration::from_secs(20 * 60);

/// The `.p8` key Apple gives developers: an EC P-256 private key in PKCS#8 PEM.
pub struct ProviderKey {
    signing: SigningKey,
}

/// Says what it is, never the secret.
impl std::fmt::Debug for ProviderKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ProviderKey(<secret>)")
    }
}

impl ProviderKey {
    /// Read and parse the `.p8` at `path`: a wrong file fails here, at start-up and in
    /// `pushgate check`, not at the first send.
    pub fn load(path: &Path) -> Result<ProviderKey, ApnsError> {
        let fail = |message: String| ApnsError::Key {
            path: path.display().to_string(),
            message,
        };
        let pem = std::fs::read_to_string(path).map_err(|e| fail(e.to_string()))?;
        ProviderKey::from_pem(&pem).map_err(fail)
    }

    /// Parse a PKCS#8 PEM EC P-256 key. The error says what is wrong, never the key.
    pub fn from_pem(pem: &str) -> Result<ProviderKey, String> {
        if pem.contains("-----BEGIN EC PRIVATE KEY-----") {
            return Err("this is a SEC1 \"EC PRIVATE KEY\"; use the .p8 file Apple gives (PKCS#8, \"PRIVATE KEY\")".into());
        }
        // The parser's messages never contain key material.
        SigningKey::from_pkcs8_pem(pem.trim())
            .map(|signing| ProviderKey { signing })
            .map_err(|e| {
                format!("not an EC P-256 private key in PKCS#8 PEM (the .p8 file Apple gives): {e}")
            })
    }

    /// The public half, which verifies the tokens this key signs.
    pub fn verifying_key(&self) -> VerifyingKey {
        *self.signing.verifying_key()
    }

    /// Sign `input` with ES256: the signature in JOSE form (r‖s, 64 bytes).
    fn sign(&self, input: &[u8]) -> Result<[u8; 64], String> {
        // Hedged (RFC 6979 plus fresh randomness), so that a token replacing a refused
        // one differs from it even when both are signed within the same second.
        let signature: Signature = self
            .signing
            .try_sign_with_rng(&mut OsRng, input)
            .map_err(|e| format!("signing the provider token: {e}"))?;
        Ok(signature.to_bytes().into())
    }
}

/// The JWT header Apple reads.
#[derive(Serialize)]
struct Header<'a> {
    alg: &'static str,
    kid: &'a str,
}

/// The JWT claims Apple reads.
#[derive(Serialize)]
struct Claims<'a> {
    iss: &'a str,
    iat: i64,
}

/// One signed provider token.
#[derive(Clone)]
struct Signed {
    value: Arc<str>,
    /// Unix seconds, as in the token (`iat`).
    iat: i64,
    /// The monotonic clock at signing: with `iat`, the token's age across a wall-clock
    /// jump as across a suspended machine.
    at: Instant,
}

impl Signed {
    /// The larger of the monotonic and the wall-clock age: Apple judges by its wall
    /// clock, and a suspended machine's monotonic clock stands still.
    fn age(&self) -> Duration {
        let wall_secs = (now_ms().div_euclid(1000) - self.iat).max(0) as u64;
        self.at.elapsed().max(Duration::from_secs(wall_secs))
    }
}

/// Held while a token is signed, so one signing happens at a time.
#[derive(Default)]
struct Signing {
    /// When a refused token was last replaced.
    last_forced: Option<Instant>,
    /// Tokens signed so far.
    count: u64,
}

/// What to do about the current token.
enum Decision {
    /// Send with this one (it is fresh, or another caller already replaced the refused one).
    Use(Arc<str>),
    /// No new token to try.
    Nothing,
    /// Sign a new one; `forced` when it replaces a token Apple refused.
    Sign { forced: bool },
}

/// The provider tokens of one key: signed when due, shared by every send.
pub struct ProviderTokens {
    key: ProviderKey,
    key_id: String,
    team_id: String,
    /// How long one token is used.
    lifetime: Duration,
    current: RwLock<Option<Signed>>,
    signing: Mutex<Signing>,
}

impl ProviderTokens {
    pub fn new(key: ProviderKey, key_id: &str, team_id: &str, lifetime: Duration) -> Self {
        ProviderTokens {
            key,
            key_id: key_id.to_owned(),
            team_id: team_id.to_owned(),
            lifetime,
            current: RwLock::new(None),
            signing: Mutex::new(Signing::default()),
        }
    }

    /// A token has been signed.
    pub fn has_token(&self) -> bool {
        self.cached().is_some()
    }

    /// Tokens signed so far.
    pub fn signed_count(&self) -> u64 {
        self.signing.lock().map_or(0, |s| s.count)
    }

    /// The key, for tests that verify what it signed.
    #[cfg(test)]
    pub(crate) fn key(&self) -> &ProviderKey {
        &self.key
    }

    fn cached(&self) -> Option<Signed> {
        self.current.read().ok().and_then(|t| t.clone())
    }

    /// The token to send with: the current one, or a new one once it is due.
    pub fn token(&self) -> Result<Arc<str>, ApnsError> {
        if let Some(t) = self.cached()
            && t.age() < self.lifetime
        {
            return Ok(t.value);
        }
        let token = self.sign_with(|current, _| match current {
            Some(t) if t.age() < self.lifetime => Decision::Use(t.value.clone()),
            _ => Decision::Sign { forced: false },
        })?;
        token.ok_or_else(|| ApnsError::Sign("no provider token was signed".into()))
    }

    /// How long until the current token is due for replacement (zero with none).
    pub fn due_in(&self) -> Duration {
        self.cached()
            .map_or(Duration::ZERO, |t| self.lifetime.saturating_sub(t.age()))
    }

    /// The shortest time between two replacements of a refused token: the token's
    /// lifetime, and at most Apple's 20 minutes. A key Apple keeps refusing (a wrong key
    /// id, team or clock) then costs one new token a window, not one a send.
    pub fn forced_spacing(&self) -> Duration {
        self.lifetime.min(APPLE_MIN_REFRESH)
    }

    /// Apple refused `refused` (403 ExpiredProviderToken or InvalidProviderToken): the
    /// token to resend with, if there is one worth trying. When another caller replaced
    /// `refused` meanwhile, that replacement; while it is still the current token, a new
    /// one, unless one was forced within [`ProviderTokens::forced_spacing`]. `None`:
    /// nothing new to try.
    pub fn replace(&self, refused: &str) -> Option<Arc<str>> {
        let spacing = self.forced_spacing();
        let replaced = self.sign_with(|current, signing| match current {
            Some(t) if *t.value != *refused => Decision::Use(t.value.clone()),
            _ if signing.last_forced.is_some_and(|at| at.elapsed() < spacing) => Decision::Nothing,
            _ => Decision::Sign { forced: true },
        });
        replaced.unwrap_or_else(|e| {
            tracing::error!(error = %e, "replacing the refused APNs provider token");
            None
        })
    }

    /// Under the signing lock, decide from the current token and sign if so decided:
    /// callers that waited for the lock find the token the first one signed.
    fn sign_with(
        &self,
        decide: impl FnOnce(Option<&Signed>, &Signing) -> Decision,
    ) -> Result<Option<Arc<str>>, ApnsError> {
        // Signing takes well under a millisecond and nothing awaits while the lock is
        // held: a blocking lock is cheaper than an async one here.
        let mut signing = self
            .signing
            .lock()
            .map_err(|_| ApnsError::Sign("the signing lock is poisoned".into()))?;
        let forced = match decide(self.cached().as_ref(), &signing) {
            Decision::Use(token) => return Ok(Some(token)),
            Decision::Nothing => return Ok(None),
            Decision::Sign { forced } => forced,
        };
        let signed = self.sign_now().map_err(ApnsError::Sign)?;
        signing.count += 1;
        if forced {
            signing.last_forced = Some(Instant::now());
        }
        tracing::info!(
            key_id = %self.key_id,
            signed = signing.count,
            forced,
            "signed an APNs provider token"
        );
        let value = signed.value.clone();
        if let Ok(mut slot) = self.current.write() {
            *slot = Some(signed);
        }
        Ok(Some(value))
    }

    fn sign_now(&self) -> Result<Signed, String> {
        let iat = now_ms().div_euclid(1000);
        Ok(Signed {
            value: self.jwt(iat)?.into(),
            iat,
            at: Instant::now(),
        })
    }

    /// The provider token for `iat`: `base64url(header).base64url(claims).base64url(r‖s)`.
    fn jwt(&self, iat: i64) -> Result<String, String> {
        let header = serde_json::to_vec(&Header {
            alg: "ES256",
            kid: &self.key_id,
        })
        .map_err(|e| e.to_string())?;
        let claims = serde_json::to_vec(&Claims {
            iss: &self.team_id,
            iat,
        })
        .map_err(|e| e.to_string())?;
        let input = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header),
            URL_SAFE_NO_PAD.encode(claims)
        );
        let signature = self.key.sign(input.as_bytes())?;
        Ok(format!("{input}.{}", URL_SAFE_NO_PAD.encode(signature)))
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use p256::ecdsa::signature::Verifier as _;
    use p256::pkcs8::{EncodePrivateKey as _, LineEnding};
    use serde_json::{Value, json};

    use super::*;

    /// A fresh key as Apple's `.p8` holds one (PKCS#8 PEM).
    pub(crate) fn p8() -> String {
        SigningKey::random(&mut OsRng)
            .to_pkcs8_pem(LineEnding::LF)
            .expect("PKCS#8 PEM")
            .to_string()
    }

    fn tokens(lifetime: Duration) -> ProviderTokens {
        let key = ProviderKey::from_pem(&p8()).expect("a key");
        ProviderTokens::new(key, "ABC123DEFG", "TEAM123456", lifetime)
    }

    fn part(token: &str, index: usize) -> Value {
        let part = token.split('.').nth(index).expect("three parts");
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(part).expect("base64url")).expect("JSON")
    }

    /// Make the current token `by` older, as if time had passed.
    fn age(tokens: &ProviderTokens, by: Duration) {
        let mut slot = tokens.current.write().unwrap();
        let signed = slot.as_mut().expect("a token");
        signed.at = signed.at.checked_sub(by).expect("an earlier instant");
        signed.iat -= by.as_secs() as i64;
    }

    #[test]
    fn a_token_is_an_es256_jwt_that_the_keys_public_half_verifies() {
        let tokens = tokens(Duration::from_secs(2400));
        assert!(!tokens.has_token());
        let before = now_ms() / 1000;
        let token = tokens.token().expect("a token");
        assert!(tokens.has_token());
        assert_eq!(
            part(&token, 0),
            json!({"alg": "ES256", "kid": "ABC123DEFG"})
        );
        let claims = part(&token, 1);
        assert_eq!(claims["iss"], "TEAM123456");
        let iat = claims["iat"].as_i64().expect("iat in seconds");
        assert!((before..=before + 1).contains(&iat), "{iat} vs {before}");
        assert_eq!(claims.as_object().map(|c| c.len()), Some(2), "{claims}");

        let (input, signature) = token.rsplit_once('.').expect("a signature");
        let signature = URL_SAFE_NO_PAD
            .decode(signature)
            .expect("base64url, no padding");
        assert_eq!(signature.len(), 64, "JOSE r||s, not DER");
        let signature = Signature::from_slice(&signature).expect("r||s");
        let verifying = tokens.key.verifying_key();
        assert!(verifying.verify(input.as_bytes(), &signature).is_ok());
        assert!(
            verifying.verify(b"another input", &signature).is_err(),
            "the check can fail"
        );
        let other = ProviderKey::from_pem(&p8()).expect("a key").verifying_key();
        assert!(other.verify(input.as_bytes(), &signature).is_err());
    }

    #[test]
    fn one_token_is_used_for_its_lifetime_and_then_replaced() {
        let tokens = tokens(Duration::from_secs(2400));
        assert_eq!(tokens.due_in(), Duration::ZERO, "none yet: due at once");
        let first = tokens.token().unwrap();
        for _ in 0..100 {
            assert_eq!(tokens.token().unwrap(), first);
        }
        assert!(tokens.due_in() > Duration::from_secs(2390));
        age(&tokens, Duration::from_secs(2399));
        assert_eq!(
            tokens.token().unwrap(),
            first,
            "still inside its 40 minutes"
        );
        age(&tokens, Duration::from_secs(1));
        assert_eq!(tokens.due_in(), Duration::ZERO);
        let second = tokens.token().unwrap();
        assert_ne!(second, first, "replaced once used for 40 minutes");
        assert_eq!(tokens.token().unwrap(), second);
        assert_eq!(tokens.signed_count(), 2);
    }

    #[test]
    fn the_wall_clock_age_counts_when_the_monotonic_clock_stood_still() {
        let tokens = tokens(Duration::from_secs(2400));
        let first = tokens.token().unwrap();
        // A suspended machine: iat is old by the wall clock, the Instant is not.
        tokens.current.write().unwrap().as_mut().unwrap().iat -= 2400;
        assert_ne!(tokens.token().unwrap(), first);
    }

    #[test]
    fn concurrent_callers_sign_one_token() {
        let tokens = Arc::new(tokens(Duration::from_secs(2400)));
        let barrier = Arc::new(std::sync::Barrier::new(16));
        let got: Vec<Arc<str>> = (0..16)
            .map(|_| {
                let (tokens, barrier) = (tokens.clone(), barrier.clone());
                std::thread::spawn(move || {
                    barrier.wait();
                    tokens.token().unwrap()
                })
            })
            .collect::<Vec<_>>()
            .into_iter()
            .map(|t| t.join().unwrap())
            .collect();
        assert!(got.iter().all(|t| *t == got[0]));
        assert_eq!(tokens.signed_count(), 1);

        // Sixteen sends refused with the same token: one new token, which all resend with.
        let refused = got[0].clone();
        let replaced: Vec<Option<Arc<str>>> = (0..16)
            .map(|_| {
                let (tokens, barrier, refused) = (tokens.clone(), barrier.clone(), refused.clone());
                std::thread::spawn(move || {
                    barrier.wait();
                    tokens.replace(&refused)
                })
            })
            .collect::<Vec<_>>()
            .into_iter()
            .map(|t| t.join().unwrap())
            .collect();
        let fresh = replaced[0].clone().expect("a new token");
        assert_ne!(fresh, refused);
        assert!(replaced.iter().all(|t| t.as_ref() == Some(&fresh)));
        assert_eq!(tokens.signed_count(), 2);
    }

    #[test]
    fn a_refused_token_is_replaced_at_most_once_a_window() {
        let tokens = tokens(Duration::from_secs(2400));
        assert_eq!(tokens.forced_spacing(), Duration::from_secs(1200));
        let first = tokens.token().unwrap();
        let second = tokens.replace(&first).expect("replaced at once");
        assert_ne!(second, first, "a new token even within the same second");
        assert_eq!(
            tokens.replace(&first),
            Some(second.clone()),
            "an old refusal resends with the current token"
        );
        assert_eq!(
            tokens.replace(&second),
            None,
            "refused again at once: a wrong key, not an old token; no new token a send"
        );
        assert_eq!(tokens.signed_count(), 2);
        // A window later a refused token may be replaced again.
        tokens.signing.lock().unwrap().last_forced =
            Instant::now().checked_sub(Duration::from_secs(1200));
        let third = tokens.replace(&second).expect("replaced after the spacing");
        assert_ne!(third, second);
        // A short test lifetime shortens the spacing with it.
        assert_eq!(
            super::tests::tokens(Duration::from_secs(4)).forced_spacing(),
            Duration::from_secs(4)
        );
    }

    #[test]
    fn a_wrong_key_file_names_the_path_and_never_the_key() {
        let dir = tempfile::tempdir().unwrap();
        let good = p8();
        let sec1 = SigningKey::random(&mut OsRng);
        let sec1 = p256::SecretKey::from(sec1)
            .to_sec1_pem(LineEnding::LF)
            .expect("SEC1 PEM")
            .to_string();
        // An RSA key (a Google service account's) in PKCS#8 PEM.
        let rsa = "-----BEGIN PRIVATE KEY-----\nMIIBVAIBADANBgkqhkiG9w0BAQEFAASCAT4wggE6AgEAAkEA\n-----END PRIVATE KEY-----\n";
        let cases = [
            ("empty.p8", String::new(), "not an EC P-256 private key"),
            ("sec1.pem", sec1.clone(), "SEC1"),
            ("rsa.p8", rsa.into(), "not an EC P-256 private key"),
            (
                "cut.p8",
                good[..good.len() / 2].to_owned(),
                "not an EC P-256 private key",
            ),
        ];
        for (name, text, expected) in cases {
            let path = dir.path().join(name);
            std::fs::write(&path, &text).unwrap();
            let err = ProviderKey::load(&path).expect_err(name).to_string();
            assert!(err.contains(&path.display().to_string()), "{err}");
            assert!(err.contains(expected), "{name}: {err}");
            for line in text
                .lines()
                .filter(|l| !l.starts_with("-----") && l.len() > 8)
            {
                assert!(!err.contains(line), "{name}: the key shows in {err}");
            }
        }
        let missing = dir.path().join("AuthKey_MISSING.p8");
        let err = ProviderKey::load(&missing).unwrap_err().to_string();
        assert!(err.starts_with("reading the APNs key"), "{err}");
        assert!(err.contains("AuthKey_MISSING.p8"), "{err}");

        // Apple's file has no newline at its end; CRLF line ends also read.
        let path = dir.path().join("AuthKey_ABC123DEFG.p8");
        std::fs::write(&path, good.trim_end()).unwrap();
        let key = ProviderKey::load(&path).expect("Apple's .p8 reads");
        std::fs::write(&path, good.replace('\n', "\r\n")).unwrap();
        assert!(ProviderKey::load(&path).is_ok(), "CRLF reads");
        let shown = format!("{key:?}");
        assert_eq!(shown, "ProviderKey(<secret>)");
        for line in good.lines().filter(|l| !l.starts_with("-----")) {
            assert!(!shown.contains(line));
        }
    }
}
