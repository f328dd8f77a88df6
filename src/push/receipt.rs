//! What the app told us of a push after the provider took it: that it reached the
//! device (`delivered`) and that the user opened it (`opened`). Each time is the first
//! one reported; a later report of the same event changes nothing.

use serde::{Deserialize, Serialize};

/// The receipts of one push, as the record carries them (unix ms, the app's clock).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Receipt {
    /// When the app first reported the push delivered to the device.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delivered_at: Option<i64>,
    /// When the app first reported the user opened it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub opened_at: Option<i64>,
}

impl Receipt {
    /// Whether the push is known to have reached the device: an `opened` receipt says
    /// so too, even when its `delivered` one never came.
    pub fn reached_device(&self) -> bool {
        self.delivered_at.is_some() || self.opened_at.is_some()
    }

    /// `self` with the times `other` has and `self` lacks (first reported wins, and each
    /// is reported once, so the two never disagree).
    pub fn or(self, other: Receipt) -> Receipt {
        Receipt {
            delivered_at: self.delivered_at.or(other.delivered_at),
            opened_at: self.opened_at.or(other.opened_at),
        }
    }

    /// Whether neither time is known.
    pub fn is_empty(&self) -> bool {
        self.delivered_at.is_none() && self.opened_at.is_none()
    }
}

/// What one receipt reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ReceiptEvent {
    Delivered,
    Opened,
}

impl ReceiptEvent {
    /// Its name on the wire, in counters and in bitmap keys.
    pub fn as_str(self) -> &'static str {
        match self {
            ReceiptEvent::Delivered => "delivered",
            ReceiptEvent::Opened => "opened",
        }
    }

    pub fn parse(text: &str) -> Option<ReceiptEvent> {
        match text {
            "delivered" => Some(ReceiptEvent::Delivered),
            "opened" => Some(ReceiptEvent::Opened),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_opened_receipt_alone_means_the_push_reached_the_device() {
        let opened = Receipt {
            delivered_at: None,
            opened_at: Some(5),
        };
        assert!(opened.reached_device());
        assert!(!Receipt::default().reached_device());
    }

    #[test]
    fn or_keeps_each_known_time() {
        let a = Receipt {
            delivered_at: Some(1),
            opened_at: None,
        };
        let b = Receipt {
            delivered_at: Some(9),
            opened_at: Some(2),
        };
        assert_eq!(
            a.or(b),
            Receipt {
                delivered_at: Some(1),
                opened_at: Some(2)
            }
        );
    }

    #[test]
    fn events_parse_only_their_names() {
        assert_eq!(ReceiptEvent::parse("opened"), Some(ReceiptEvent::Opened));
        assert_eq!(ReceiptEvent::parse("Opened"), None);
        assert_eq!(ReceiptEvent::Delivered.as_str(), "delivered");
    }
}
