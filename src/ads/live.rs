//! The ad gate as a running pushgate holds it: the `[ads]` in force (swapped on
//! reload), the consent registry it reads before a batch is routed, and the clock.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use super::AdGate;
use crate::clock::Clock;
use crate::config::Config;
use crate::push::consent::is_csno;
use crate::push::{Consent, Decision};
use crate::store::{Store, StoreError};

/// Shared by every port, the HTTP API, the senders and the console; clones share one gate.
#[derive(Clone)]
pub struct LiveGate {
    gate: Arc<RwLock<Option<AdGate>>>,
    store: Store,
    clock: Clock,
}

/// The consents of a batch's customers, by `csno`.
pub type Consents = HashMap<String, Consent>;

impl LiveGate {
    /// The gate `config` asks for (none without `[ads]`), reading `store`, timed by the
    /// config's clock.
    pub fn new(config: &Config, store: Store) -> LiveGate {
        LiveGate {
            gate: Arc::new(RwLock::new(AdGate::from_config(config))),
            store,
            clock: config.clock.clone(),
        }
    }

    /// Apply a reloaded `[ads]`.
    pub fn reload(&self, config: &Config) {
        if let Ok(mut gate) = self.gate.write() {
            *gate = AdGate::from_config(config);
        }
    }

    /// The gate in force; none without `[ads]`.
    pub fn gate(&self) -> Option<AdGate> {
        self.gate.read().ok().and_then(|g| g.clone())
    }

    /// Whether an `[ads]` section is in force (without copying it).
    pub fn is_on(&self) -> bool {
        self.gate.read().is_ok_and(|g| g.is_some())
    }

    pub fn now_ms(&self) -> i64 {
        self.clock.now_ms()
    }

    pub fn clock(&self) -> &Clock {
        &self.clock
    }

    /// The consents of the customers `csnos` name, in one round trip; nothing is read
    /// without `[ads]` (no push can then be an ad that goes out).
    pub async fn consents<'a>(
        &self,
        csnos: impl Iterator<Item = &'a str>,
    ) -> Result<Consents, StoreError> {
        if !self.is_on() {
            return Ok(Consents::new());
        }
        let mut wanted: Vec<&str> = csnos.filter(|c| is_csno(c)).collect();
        wanted.sort_unstable();
        wanted.dedup();
        let found = self.store.consents(&wanted).await?;
        Ok(wanted
            .into_iter()
            .zip(found)
            .filter_map(|(csno, c)| Some((csno.to_owned(), c?)))
            .collect())
    }
}

/// A route's decision through the gate: untouched unless it sends an ad; an ad with no
/// `[ads]` configured is the script's error, naming the missing section.
pub fn gated(
    gate: Option<&AdGate>,
    decision: Decision,
    consent: Option<&Consent>,
    now_ms: i64,
) -> Result<Decision, String> {
    let is_ad =
        matches!(&decision, Decision::Send { push } | Decision::Later { push, .. } if push.is_ad());
    match gate {
        _ if !is_ad => Ok(decision),
        Some(gate) => {
            let gated = gate.apply(decision, consent, now_ms);
            // The labels lengthen the message: Apple's size rule is checked again on
            // what will be sent, as the script's decision was.
            if let Decision::Send { push } | Decision::Later { push, .. } = &gated
                && push.target.token().is_some()
            {
                crate::apns::check(push).map_err(|e| format!("with the ad labels added: {e}"))?;
            }
            Ok(gated)
        }
        None => Err(
            "the push is an ad (kind = \"ad\") but the config has no [ads] section (sender, opt_out)"
                .into(),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::push::{Kind, Push, Target};

    fn push(kind: Option<Kind>) -> Push {
        Push {
            kind,
            ..Push::new(Target::Token("t".into()))
        }
    }

    #[test]
    fn without_ads_an_ad_is_a_script_error_naming_the_section_and_info_passes() {
        let ad = Decision::Send {
            push: push(Some(Kind::Ad)),
        };
        let err = gated(None, ad, None, 0).unwrap_err();
        assert!(err.contains("no [ads] section"), "{err}");
        let info = Decision::Send {
            push: push(Some(Kind::Info)),
        };
        assert_eq!(gated(None, info.clone(), None, 0), Ok(info));
    }
}
