//! Advertising pushes: the consent registry (`consent_set.lua` through the store, and
//! `/api/v1/consents`), and the ad gate applied by a running pushgate.

use std::time::Duration;

use pushgate::push::{Consent, Grant};
use pushgate::store::Store;

use crate::support::*;

const DAY_MS: i64 = 86_400_000;

fn open(redis: &RedisServer) -> Store {
    Store::open(&redis.url(), "pg:", Duration::from_secs(2), 3600).expect("store opens")
}

fn grant(given: bool, at_ms: i64, channel: &str) -> Option<Grant> {
    Some(Grant {
        given,
        at_ms,
        channel: channel.into(),
    })
}

#[tokio::test]
async fn consent_set_keeps_what_a_change_does_not_name_and_indexes_only_given_ad_consent() {
    let redis = RedisServer::start();
    let store = open(&redis);
    let now = pushgate::clock::now_ms();
    let old = now - 800 * DAY_MS;
    let changes = store
        .set_consents(&[
            (
                "C1".into(),
                Consent {
                    ad: grant(true, old, "branch"),
                    night: grant(true, old, "branch"),
                },
            ),
            (
                "C2".into(),
                Consent {
                    ad: grant(true, now, "app"),
                    night: None,
                },
            ),
        ])
        .await
        .unwrap();
    assert_eq!(changes[0].before, Consent::default());
    // Withdraw C1's night consent only: its ad consent stays.
    let changes = store
        .set_consents(&[(
            "C1".into(),
            Consent {
                ad: None,
                night: grant(false, now, "web"),
            },
        )])
        .await
        .unwrap();
    assert_eq!(changes[0].before.night, grant(true, old, "branch"));
    assert_eq!(changes[0].after.ad, grant(true, old, "branch"));
    assert_eq!(changes[0].after.night, grant(false, now, "web"));
    let found = store.consents(&["C1", "C2", "C3"]).await.unwrap();
    assert_eq!(found[0], Some(changes[0].after.clone()));
    assert_eq!(
        found[1].as_ref().and_then(|c| c.ad.clone()),
        grant(true, now, "app")
    );
    assert_eq!(found[2], None);
    // Only C1's consent is old enough to be due; withdrawing it takes it off the list.
    let due = store
        .consents_given_by(now - 700 * DAY_MS, 0, 10)
        .await
        .unwrap();
    assert_eq!(
        due.iter().map(|(c, _)| c.as_str()).collect::<Vec<_>>(),
        ["C1"]
    );
    store
        .set_consents(&[(
            "C1".into(),
            Consent {
                ad: grant(false, now, "app"),
                night: None,
            },
        )])
        .await
        .unwrap();
    assert!(store.consents_given_by(now, 0, 10).await.unwrap().len() == 1);
    assert!(
        store
            .consents_given_by(now - 700 * DAY_MS, 0, 10)
            .await
            .unwrap()
            .is_empty()
    );
    // A flush of the push log keeps the registry.
    store.flush().await.unwrap();
    assert_eq!(
        store.consents(&["C1"]).await.unwrap()[0]
            .as_ref()
            .and_then(|c| c.ad.clone()),
        grant(false, now, "app")
    );
}
