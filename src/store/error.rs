//! What can go wrong talking to Redis, and which failures are worth trying again.

use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    #[error("redis did not answer within {0:?}")]
    Timeout(Duration),
    #[error("the store writer has stopped")]
    WriterGone,
    #[error("writing to redis failed: {0}")]
    Commit(String),
    #[error("unexpected answer from redis: {0}")]
    Protocol(String),
    #[error("no Sentinel has named a Redis master yet")]
    NoMaster,
    #[error(
        "written on the master, but WAIT confirmed it on {reached} of {wanted} replicas within {timeout_ms} ms; send again (a repeat is acked as a duplicate once it is replicated)"
    )]
    NotReplicated {
        reached: u32,
        wanted: u32,
        timeout_ms: u64,
    },
}

impl StoreError {
    /// Worth trying again soon: the connection, not the request, failed.
    pub fn is_transient(&self) -> bool {
        match self {
            StoreError::Redis(e) => {
                e.is_io_error()
                    || e.is_connection_refusal()
                    || e.is_connection_dropped()
                    || e.is_timeout()
                    || matches!(e.code(), Some("READONLY" | "LOADING" | "MASTERDOWN"))
            }
            StoreError::Timeout(_) | StoreError::NoMaster => true,
            // Answered at once: the record is on the master, and the FEP's resend is
            // acked as a duplicate once a replica has it. Retrying here would hold up
            // every port behind this one batch.
            StoreError::NotReplicated { .. }
            | StoreError::WriterGone
            | StoreError::Commit(_)
            | StoreError::Protocol(_) => false,
        }
    }
}
