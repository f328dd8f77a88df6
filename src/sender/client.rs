//! The provider an app's sender talks to: FCM HTTP v1 or APNs directly. Both take a
//! [`Push`] and give back an [`Answer`] classified by the same retry classes, so the
//! sender's loop, retries and outcomes are the same for both.

use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use crate::apns::ApnsClient;
use crate::config::Provider;
use crate::fcm::{self, Answer, Expiry, FcmClient};
use crate::push::Push;

pub enum Client {
    Fcm(Arc<FcmClient>),
    Apns(Arc<ApnsClient>),
}

impl Client {
    /// Send one push whose deadline is `deadline_ms` (unix ms). `dry_run` asks FCM to
    /// validate only; APNs has no such mode, so a dry run is not sent to Apple at all.
    pub async fn send(&self, push: &Push, deadline_ms: i64, dry_run: bool) -> Answer {
        match self {
            Client::Fcm(client) => {
                let message = match push.ttl_secs {
                    Some(_) => fcm::Message::expiring(
                        push,
                        Expiry::of(deadline_ms, crate::clock::now_ms()),
                    ),
                    None => fcm::Message::for_push(push),
                };
                client.send(&message, dry_run).await
            }
            Client::Apns(_) if dry_run => Answer::Accepted {
                body: "{\"dry_run\":\"not sent: APNs has no validate-only mode\"}".into(),
            },
            Client::Apns(client) => {
                // Apple keeps it until its deadline, and no longer.
                let expiration = push.ttl_secs.map(|_| deadline_ms.div_euclid(1000));
                client.send(push, expiration).await
            }
        }
    }

    /// Whether an access token (FCM) or provider token (APNs) is at hand.
    pub fn has_token(&self) -> bool {
        match self {
            Client::Fcm(client) => client.credentials().has_token(),
            Client::Apns(client) => client.has_token(),
        }
    }

    pub fn provider(&self) -> Provider {
        match self {
            Client::Fcm(_) => Provider::Fcm,
            Client::Apns(_) => Provider::Apns,
        }
    }

    /// What it sends to: the FCM project id, or the APNs app's bundle id.
    pub fn project(&self) -> String {
        match self {
            Client::Fcm(client) => client.credentials().project_id().to_owned(),
            Client::Apns(client) => client.topic().to_owned(),
        }
    }

    /// When the token in use expires (unix ms): FCM's access token, or when the APNs
    /// provider token is due to be replaced.
    pub fn token_expires_at_ms(&self) -> Option<i64> {
        match self {
            Client::Fcm(client) => client.credentials().token_expires_at_ms(),
            Client::Apns(client) => client.token_expires_at_ms(),
        }
    }

    /// Keep the token fresh in the background until `cancel`.
    pub fn keep_fresh(&self, cancel: CancellationToken) -> tokio::task::JoinHandle<()> {
        match self {
            Client::Fcm(client) => tokio::spawn(client.credentials().clone().keep_fresh(cancel)),
            Client::Apns(client) => tokio::spawn(client.clone().keep_fresh(cancel)),
        }
    }
}
