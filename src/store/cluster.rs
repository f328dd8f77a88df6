//! What the nodes sharing one Redis keep there:
//! - `lease:{port}`: which node runs a connect-mode port, as `{node}/{instance}/{epoch}`,
//!   with a TTL. `lease:{port}:epoch` counts acquisitions, so every holder has a token
//!   no earlier holder had; the ingest script writes a port's records only while the
//!   lease still holds that token (the fence).
//! - `node:{id}`: a node's heartbeat (JSON, with a TTL); `nodes`: zset of node ids by
//!   the last heartbeat (ms).
//! - `portctl`: hash port → `run …` / `stop …` (with when and on which node), what an
//!   operator last asked of the port; every node follows each new value once.

use std::collections::HashMap;

use super::scripts::scripts;
use super::{Fence, Store, StoreError};

/// What an operator last asked of a port, for every node to follow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wanted {
    Run,
    Stop,
}

/// The answer to an acquire.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Acquired {
    Ours(Fence),
    /// Another node holds it (its `{node}/{instance}/{epoch}`).
    Held(String),
}

/// The node part of a lease holder `{node}/{instance}/{epoch}`.
pub fn holder_node(holder: &str) -> &str {
    holder.rsplitn(3, '/').last().unwrap_or(holder)
}

impl Store {
    pub fn lease_key(port: &str) -> String {
        format!("lease:{port}")
    }

    pub async fn acquire_port(
        &self,
        port: &str,
        node: &str,
        instance: &str,
        ttl_ms: u64,
    ) -> Result<Acquired, StoreError> {
        let mut invocation = scripts().acquire_port.prepare_invoke();
        invocation
            .arg(&self.prefix)
            .arg(port)
            .arg(node)
            .arg(instance)
            .arg(ttl_ms);
        let (won, value): (u8, String) = self.invoke(&invocation).await?;
        Ok(if won == 1 {
            Acquired::Ours(Fence {
                key: Store::lease_key(port),
                token: value,
            })
        } else {
            Acquired::Held(value)
        })
    }

    /// Push the lease's expiry out; false if `fence` no longer holds it.
    pub async fn renew_port(
        &self,
        port: &str,
        fence: &Fence,
        ttl_ms: u64,
    ) -> Result<bool, StoreError> {
        self.renew_or_release(port, fence, ttl_ms).await
    }

    /// Give the lease up (if still ours) so another node takes the port at once.
    pub async fn release_port(&self, port: &str, fence: &Fence) -> Result<bool, StoreError> {
        self.renew_or_release(port, fence, 0).await
    }

    async fn renew_or_release(
        &self,
        port: &str,
        fence: &Fence,
        ttl_ms: u64,
    ) -> Result<bool, StoreError> {
        let mut invocation = scripts().renew_port.prepare_invoke();
        invocation
            .arg(&self.prefix)
            .arg(port)
            .arg(&fence.token)
            .arg(ttl_ms);
        let held: u8 = self.invoke(&invocation).await?;
        Ok(held == 1)
    }

    /// Record this node's heartbeat (JSON) for `ttl_ms`.
    pub async fn heartbeat(&self, node: &str, body: &str, ttl_ms: u64) -> Result<(), StoreError> {
        let now = crate::clock::now_ms();
        let mut pipe = redis::pipe();
        pipe.cmd("SET")
            .arg(self.key(&format!("node:{node}")))
            .arg(body)
            .arg("PX")
            .arg(ttl_ms)
            .ignore();
        pipe.cmd("ZADD")
            .arg(self.key("nodes"))
            .arg(now)
            .arg(node)
            .ignore();
        // Nodes silent for a day drop off the list.
        pipe.cmd("ZREMRANGEBYSCORE")
            .arg(self.key("nodes"))
            .arg("-inf")
            .arg(now - 86_400_000)
            .ignore();
        let () = self.query_pipe(&pipe).await?;
        Ok(())
    }

    /// Every node seen in the last day: id, last heartbeat (ms), and its heartbeat
    /// body if it is still alive.
    pub async fn nodes(&self) -> Result<Vec<(String, i64, Option<String>)>, StoreError> {
        let seen: Vec<(String, f64)> = self
            .query(
                redis::cmd("ZRANGE")
                    .arg(self.key("nodes"))
                    .arg(0)
                    .arg(-1)
                    .arg("WITHSCORES"),
            )
            .await?;
        if seen.is_empty() {
            return Ok(Vec::new());
        }
        let keys: Vec<String> = seen
            .iter()
            .map(|(id, _)| self.key(&format!("node:{id}")))
            .collect();
        let bodies: Vec<Option<String>> = self.query(redis::cmd("MGET").arg(keys)).await?;
        Ok(seen
            .into_iter()
            .zip(bodies)
            .map(|((id, at), body)| (id, at as i64, body))
            .collect())
    }

    /// Record what an operator asked of a port, for every node. Returns the value
    /// stored, which names the switch (`run 1732512345123 node-a`): nodes act on a
    /// value they have not seen, once.
    pub async fn set_wanted(
        &self,
        port: &str,
        wanted: Wanted,
        node: &str,
    ) -> Result<String, StoreError> {
        let verb = match wanted {
            Wanted::Run => "run",
            Wanted::Stop => "stop",
        };
        let value = format!("{verb} {} {node}", crate::clock::now_ms());
        let _: u64 = self
            .query(
                redis::cmd("HSET")
                    .arg(self.key("portctl"))
                    .arg(port)
                    .arg(&value),
            )
            .await?;
        Ok(value)
    }

    /// What operators last asked of each port, with the stored value that names that
    /// switch (ports never switched are absent).
    pub async fn wanted(&self) -> Result<HashMap<String, (Wanted, String)>, StoreError> {
        let all: HashMap<String, String> = self
            .query(redis::cmd("HGETALL").arg(self.key("portctl")))
            .await?;
        Ok(all
            .into_iter()
            .filter_map(|(port, v)| {
                let wanted = match v.split(' ').next() {
                    Some("run") => Wanted::Run,
                    Some("stop") => Wanted::Stop,
                    _ => return None,
                };
                Some((port, (wanted, v)))
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::holder_node;

    #[test]
    fn holder_node_is_everything_before_instance_and_epoch() {
        assert_eq!(holder_node("host-a:8080/3f2a/17"), "host-a:8080");
        assert_eq!(holder_node("weird"), "weird");
    }
}

/// One replica as the master reports it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Replica {
    pub addr: String,
    pub state: String,
    /// Bytes of replication stream the replica has not acknowledged.
    pub behind_bytes: i64,
    /// Seconds since its last acknowledgement.
    pub lag_secs: i64,
}

/// One Sentinel's view of the master.
#[derive(Debug, Clone, serde::Serialize)]
pub struct SentinelView {
    pub addr: String,
    /// Why it could not be asked, when it could not.
    pub error: Option<String>,
    pub master: String,
    pub flags: String,
    pub replicas: String,
    pub other_sentinels: String,
    pub quorum: String,
}

/// Master, replicas and Sentinels, for the console.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Topology {
    pub master: Option<String>,
    pub role: String,
    pub replicas: Vec<Replica>,
    pub sentinels: Vec<SentinelView>,
}

impl Store {
    /// The replication picture: the master's own report, and each Sentinel's.
    pub async fn topology(&self) -> Result<Topology, StoreError> {
        let info = self.info(&["replication"]).await?;
        Ok(self.topology_from(&info).await)
    }

    /// [`Store::topology`] from an `INFO` that holds the replication section.
    pub async fn topology_from(&self, info: &HashMap<String, String>) -> Topology {
        let get = |k: &str| info.get(k).cloned().unwrap_or_default();
        let offset: i64 = get("master_repl_offset").parse().unwrap_or(0);
        let replicas = info
            .iter()
            .filter(|(k, _)| k.starts_with("slave") && k[5..].parse::<u32>().is_ok())
            .map(|(_, v)| parse_replica(v, offset))
            .collect();
        let sentinels = match self.target() {
            super::RedisTarget::Sentinel {
                sentinels,
                master_name,
                ..
            } => {
                let mut asks = tokio::task::JoinSet::new();
                for (i, addr) in sentinels.iter().enumerate() {
                    let (addr, name) = (addr.clone(), master_name.clone());
                    asks.spawn(async move { (i, ask_sentinel(&addr, &name).await) });
                }
                let mut views: Vec<(usize, SentinelView)> = asks.join_all().await;
                views.sort_by_key(|(i, _)| *i);
                views.into_iter().map(|(_, v)| v).collect()
            }
            super::RedisTarget::Direct(_) => Vec::new(),
        };
        Topology {
            master: self.master(),
            role: get("role"),
            replicas,
            sentinels,
        }
    }
}

/// `ip=…,port=…,state=online,offset=…,lag=…` from `INFO replication`.
fn parse_replica(text: &str, master_offset: i64) -> Replica {
    let field = |name: &str| {
        text.split(',')
            .find_map(|kv| kv.strip_prefix(name)?.strip_prefix('='))
            .unwrap_or_default()
            .to_owned()
    };
    Replica {
        addr: format!("{}:{}", field("ip"), field("port")),
        state: field("state"),
        behind_bytes: master_offset - field("offset").parse::<i64>().unwrap_or(0),
        lag_secs: field("lag").parse().unwrap_or(-1),
    }
}

/// `SENTINEL MASTER name` on one Sentinel, within half a second.
async fn ask_sentinel(addr: &str, master_name: &str) -> SentinelView {
    let shown = crate::config::redact(addr);
    let asked = async {
        let client = redis::Client::open(addr)?;
        let mut con = client.get_multiplexed_async_connection().await?;
        let flat: HashMap<String, String> = redis::cmd("SENTINEL")
            .arg("MASTER")
            .arg(master_name)
            .query_async(&mut con)
            .await?;
        Ok::<_, redis::RedisError>(flat)
    };
    let answer = tokio::time::timeout(std::time::Duration::from_millis(500), asked).await;
    let get = |m: &HashMap<String, String>, k: &str| m.get(k).cloned().unwrap_or_default();
    match answer {
        Ok(Ok(m)) => SentinelView {
            addr: shown,
            error: None,
            master: format!("{}:{}", get(&m, "ip"), get(&m, "port")),
            flags: get(&m, "flags"),
            replicas: get(&m, "num-slaves"),
            other_sentinels: get(&m, "num-other-sentinels"),
            quorum: get(&m, "quorum"),
        },
        Ok(Err(e)) => SentinelView::unreachable(shown, e.to_string()),
        Err(_) => SentinelView::unreachable(shown, "no answer within 500 ms".into()),
    }
}

impl SentinelView {
    fn unreachable(addr: String, error: String) -> SentinelView {
        SentinelView {
            addr,
            error: Some(error),
            master: String::new(),
            flags: String::new(),
            replicas: String::new(),
            other_sentinels: String::new(),
            quorum: String::new(),
        }
    }
}

#[cfg(test)]
mod topology_tests {
    use super::parse_replica;

    #[test]
    fn a_replica_line_gives_address_state_and_how_far_behind() {
        let r = parse_replica("ip=127.0.0.1,port=6380,state=online,offset=900,lag=1", 1000);
        assert_eq!(r.addr, "127.0.0.1:6380");
        assert_eq!(r.state, "online");
        assert_eq!(r.behind_bytes, 100);
        assert_eq!(r.lag_secs, 1);
    }
}
