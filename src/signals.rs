//! Unix signals, turned into messages for the app: SIGHUP reloads, SIGTERM/SIGINT drain.

use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
use signal_hook::iterator::Signals;
use tokio::sync::mpsc;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    /// Re-read the config and scripts and apply the difference.
    Reload,
    /// Stop accepting, finish and ack what was received, exit 0.
    Terminate,
}

/// Start a thread that forwards signals. signal-hook's iterator does the
/// async-signal-safe part; the thread only blocks on it and forwards.
pub fn listen() -> std::io::Result<mpsc::UnboundedReceiver<Signal>> {
    let mut signals = Signals::new([SIGHUP, SIGINT, SIGTERM])?;
    let (tx, rx) = mpsc::unbounded_channel();
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            for signal in signals.forever() {
                let message = if signal == SIGHUP {
                    Signal::Reload
                } else {
                    Signal::Terminate
                };
                if tx.send(message).is_err() {
                    break;
                }
            }
        })?;
    Ok(rx)
}
