//! What the console's buttons and the JSON API both do to the running gateway:
//! start, stop and restart a port; place and release a legal hold. Each writes its
//! audit entry here, so the two ways in cannot drift apart in what they record.

use std::net::SocketAddr;

use hyper::StatusCode;

use super::AdminState;
use crate::push::Record;
use crate::supervisor::SupervisorError;

/// Start, stop or restart a port, and write it in the audit log.
pub(super) async fn control_port(
    state: &AdminState,
    name: &str,
    action: &str,
    who: &str,
    peer: SocketAddr,
) -> Result<crate::supervisor::PortView, SupervisorError> {
    let sup = &state.supervisor;
    let result = match action {
        "start" => sup.start(name).await,
        "stop" => sup.stop(name).await,
        _ => sup.restart(name).await,
    };
    if result.is_ok() {
        tracing::info!(port = %name, %action, %who, "port control");
        audit(state, who, &format!("port {action}"), name, peer).await;
    }
    result
}

/// Set or clear a record's legal hold (kept past retention), and audit it.
pub(super) async fn set_hold(
    state: &AdminState,
    id: u64,
    hold: bool,
    who: &str,
    peer: SocketAddr,
) -> Result<Record, (StatusCode, String)> {
    match state.store.set_hold(id, hold).await {
        Ok(Some(record)) => {
            let action = if hold {
                "legal hold"
            } else {
                "legal hold released"
            };
            audit(state, who, action, &format!("push {id}"), peer).await;
            Ok(record)
        }
        Ok(None) => Err((StatusCode::NOT_FOUND, format!("no push {id}"))),
        Err(e) => Err((StatusCode::SERVICE_UNAVAILABLE, e.to_string())),
    }
}

/// Write one entry in the audit log: who did what to which target, from where.
/// A failure to write is logged, never shown to the caller.
pub(super) async fn audit(
    state: &AdminState,
    who: &str,
    action: &str,
    target: &str,
    peer: SocketAddr,
) {
    let addr = peer.ip().to_string();
    if let Err(e) = state
        .store
        .audit(&[
            ("who", who),
            ("action", action),
            ("target", target),
            ("addr", &addr),
        ])
        .await
    {
        tracing::warn!(error = %e, "writing the audit log");
    }
}
