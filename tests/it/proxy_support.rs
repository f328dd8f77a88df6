//! A small HTTP CONNECT proxy on a random loopback port, standing in for a bank's DMZ
//! proxy: `CONNECT host:port HTTP/1.1` is answered `200 Connection established` and the
//! bytes are copied both ways (TLS runs end to end inside the tunnel, so the proxy sees
//! only where a client went). It records every target it was asked for and every tunnel
//! it opened; any other method gets 405, and when built with credentials a CONNECT without
//! the right `Proxy-Authorization: Basic …` gets 407.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine as _;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// A request head larger than this is refused (no real CONNECT comes near it).
const MAX_HEAD: usize = 16 * 1024;

/// What the proxy was asked and did, in arrival order.
#[derive(Debug, Clone, Default)]
pub struct Seen {
    /// The `host:port` of every CONNECT, whether or not it was let through.
    pub asked: Vec<String>,
    /// The `host:port` of every tunnel opened.
    pub tunnels: Vec<String>,
    /// The status line sent for every request that was refused (405, 407, 502, 400).
    pub refused: Vec<String>,
}

/// A running proxy; dropping it stops accepting (open tunnels end with their tasks).
pub struct ConnectProxy {
    addr: SocketAddr,
    /// `user:password` as the proxy expects it, if it requires one.
    credentials: Option<(String, String)>,
    seen: Arc<Mutex<Seen>>,
    task: tokio::task::JoinHandle<()>,
}

impl ConnectProxy {
    /// A proxy that lets every CONNECT through.
    pub async fn start() -> ConnectProxy {
        ConnectProxy::launch(None).await
    }

    /// A proxy that requires `Proxy-Authorization: Basic base64(user:password)`.
    pub async fn with_credentials(user: &str, password: &str) -> ConnectProxy {
        ConnectProxy::launch(Some((user.to_owned(), password.to_owned()))).await
    }

    async fn launch(credentials: Option<(String, String)>) -> ConnectProxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let addr = listener.local_addr().expect("proxy address");
        let seen = Arc::new(Mutex::new(Seen::default()));
        let expected = credentials.as_ref().map(|(user, password)| {
            let token =
                base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
            format!("Basic {token}")
        });
        let task = tokio::spawn(accept(listener, expected, seen.clone()));
        ConnectProxy {
            addr,
            credentials,
            seen,
            task,
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://[user:password@]127.0.0.1:PORT`, as a `proxy` setting or `HTTPS_PROXY`.
    pub fn url(&self) -> String {
        match &self.credentials {
            Some((user, password)) => format!("http://{user}:{password}@{}", self.addr),
            None => format!("http://{}", self.addr),
        }
    }

    pub fn seen(&self) -> Seen {
        self.seen.lock().expect("proxy state").clone()
    }
}

impl Drop for ConnectProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn accept(listener: TcpListener, expected: Option<String>, seen: Arc<Mutex<Seen>>) {
    loop {
        let Ok((client, _)) = listener.accept().await else {
            continue;
        };
        tokio::spawn(tunnel(client, expected.clone(), seen.clone()));
    }
}

/// One client connection: read the request head, check it, connect, copy.
async fn tunnel(mut client: TcpStream, expected: Option<String>, seen: Arc<Mutex<Seen>>) {
    let Some((head, early)) = read_head(&mut client).await else {
        return;
    };
    let mut lines = head.split("\r\n");
    let request = lines.next().unwrap_or_default().to_owned();
    let mut parts = request.split(' ');
    let (method, target) = (
        parts.next().unwrap_or_default(),
        parts.next().unwrap_or_default(),
    );
    let authorization = lines
        .filter_map(|line| line.split_once(':'))
        .find(|(name, _)| name.trim().eq_ignore_ascii_case("proxy-authorization"))
        .map(|(_, value)| value.trim().to_owned());

    let refusal = if method != "CONNECT" {
        Some("HTTP/1.1 405 Method Not Allowed\r\nAllow: CONNECT")
    } else {
        note(&seen, |s| s.asked.push(target.to_owned()));
        if expected.is_some() && authorization != expected {
            Some(
                "HTTP/1.1 407 Proxy Authentication Required\r\nProxy-Authenticate: Basic realm=\"test\"",
            )
        } else if target.rsplit_once(':').is_none() {
            Some("HTTP/1.1 400 Bad Request")
        } else {
            None
        }
    };
    if let Some(answer) = refusal {
        refuse(&mut client, answer, &seen).await;
        return;
    }
    let connected = tokio::time::timeout(Duration::from_secs(10), TcpStream::connect(target)).await;
    let Ok(Ok(mut upstream)) = connected else {
        refuse(&mut client, "HTTP/1.1 502 Bad Gateway", &seen).await;
        return;
    };
    note(&seen, |s| s.tunnels.push(target.to_owned()));
    if client
        .write_all(b"HTTP/1.1 200 Connection established\r\n\r\n")
        .await
        .is_err()
        || upstream.write_all(&early).await.is_err()
    {
        return;
    }
    let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
}

fn note(seen: &Mutex<Seen>, change: impl FnOnce(&mut Seen)) {
    change(&mut seen.lock().expect("proxy state"));
}

/// Answer `answer` (a status line and headers) with no body, and close.
async fn refuse(client: &mut TcpStream, answer: &str, seen: &Mutex<Seen>) {
    let status = answer.split("\r\n").next().unwrap_or_default().to_owned();
    note(seen, |s| s.refused.push(status));
    let reply = format!("{answer}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
    let _ = client.write_all(reply.as_bytes()).await;
    let _ = client.shutdown().await;
}

/// The request head (up to the blank line) and any bytes read past it.
async fn read_head(client: &mut TcpStream) -> Option<(String, Vec<u8>)> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).into_owned();
            return Some((head, buf[end + 4..].to_vec()));
        }
        if buf.len() > MAX_HEAD {
            return None;
        }
        let read = tokio::time::timeout(Duration::from_secs(10), client.read(&mut chunk)).await;
        match read {
            Ok(Ok(n)) if n > 0 => buf.extend_from_slice(&chunk[..n]),
            _ => return None,
        }
    }
}
