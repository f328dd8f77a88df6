//! Egress through a proxy, as in a bank where only the DMZ reaches Google: the emulator
//! serves TLS with a certificate the app trusts through `ca_file`, and a CONNECT proxy in
//! the test ([`ConnectProxy`]) shows which requests went through it. The emulator's
//! `token_uri` names `127.0.0.1:PORT` and the `endpoint` names `localhost:PORT`, so a
//! tunnel's target tells the token grant from the sends.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use pushgate::emulator::Emulator;
use pushgate::store::Store;
use serde_json::{Value, json};

use crate::proxy_support::ConnectProxy;
use crate::support::*;

fn push(key: &str) -> Value {
    json!({"uniqueKey": key, "device_id": format!("tok-{key}"), "msg_title": "이체", "msg_contents": "10,000원 이체 완료"})
}

/// An emulator serving HTTPS, its certificate written to `dir/emulator.pem`.
async fn tls_emulator(dir: &Path) -> Emulator {
    let cert = dir.join("emulator.pem");
    emulator(&["--tls-cert-out", cert.to_str().expect("utf-8 path")]).await
}

/// `[fcm]` for `emulator` over TLS by the name localhost, trusting `ca_file`; its service
/// account is written into `dir`.
fn tls_fcm_table(emulator: &Emulator, dir: &Path, ca_file: &str, settings: &str) -> String {
    let account = dir.join("service-account.json");
    std::fs::write(&account, emulator.service_account_json()).unwrap();
    format!(
        "[fcm]\nservice_account = \"{}\"\nendpoint = \"https://localhost:{}\"\nca_file = \"{ca_file}\"\n{settings}\n",
        account.display(),
        emulator.addr().port(),
    )
}

/// pushgate in-process with one port `p` routed by [`SEND`] and the given `[fcm]`.
async fn start(redis: &RedisServer, fcm: &str) -> (TestApp, SocketAddr) {
    let ports = port_block("p", "device.rhai", "");
    let app = TestApp::start_with(redis, &ports, &[("device.rhai", SEND)], fcm).await;
    let addr = app.port_addr("p").await;
    (app, addr)
}

async fn wait_sent(store: &Store, key: &str) -> Value {
    eventually(Duration::from_secs(30), &format!("{key} sent"), || async {
        let id = store.id_for_key(key).await.ok().flatten()?;
        let record = store.record(id).await.ok().flatten()?.to_json();
        (record["status"] == "sent").then_some(record)
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_proxy_set_the_token_grant_and_every_send_go_through_its_tunnels() {
    let redis = RedisServer::start();
    let files = tempfile::tempdir().unwrap();
    let emu = tls_emulator(files.path()).await;
    let proxy = ConnectProxy::with_credentials("pushgate", "dmz-secret").await;
    let cert = files.path().join("emulator.pem");
    let setting = format!("proxy = \"{}\"", proxy.url());
    let fcm = tls_fcm_table(&emu, files.path(), &cert.display().to_string(), &setting);
    let (app, addr) = start(&redis, &fcm).await;

    store_messages(addr, &[push("dmz-1"), push("dmz-2")]).await;
    for key in ["dmz-1", "dmz-2"] {
        let record = wait_sent(&app.app().store, key).await;
        assert_eq!(record["fcm_send_yn"], "Y", "{record}");
    }
    assert_eq!(
        (
            emu.stats().by_key.get("dmz-1"),
            emu.stats().by_key.get("dmz-2")
        ),
        (Some(&1), Some(&1))
    );

    let seen = proxy.seen();
    let port = emu.addr().port();
    let (token, send) = (format!("127.0.0.1:{port}"), format!("localhost:{port}"));
    assert!(
        seen.tunnels.contains(&token),
        "the token grant went around the proxy: {seen:?}"
    );
    assert!(
        seen.tunnels.contains(&send),
        "the sends went around the proxy: {seen:?}"
    );
    assert!(
        seen.tunnels.iter().all(|t| *t == token || *t == send),
        "{seen:?}"
    );
    assert!(
        seen.refused.is_empty(),
        "the proxy's credentials were not sent: {seen:?}"
    );
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_proxy_the_sends_go_direct_and_the_proxy_sees_nothing() {
    let redis = RedisServer::start();
    let files = tempfile::tempdir().unwrap();
    let emu = tls_emulator(files.path()).await;
    let proxy = ConnectProxy::start().await;
    let cert = files.path().join("emulator.pem");
    let fcm = tls_fcm_table(&emu, files.path(), &cert.display().to_string(), "");
    let (app, addr) = start(&redis, &fcm).await;

    store_messages(addr, &[push("direct-1")]).await;
    wait_sent(&app.app().store, "direct-1").await;
    assert_eq!(emu.stats().by_key.get("direct-1"), Some(&1));
    let seen = proxy.seen();
    assert!(seen.asked.is_empty() && seen.tunnels.is_empty(), "{seen:?}");
    app.shutdown().await;
}

/// The real binary, since the environment is per process: `HTTPS_PROXY` is used when
/// `proxy` is unset, and `NO_PROXY` exempts the token endpoint's host from it. `ca_file`
/// is given relative to the config file.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_proxy_from_the_environment_is_used_when_proxy_is_unset_and_no_proxy_exempts() {
    let redis = RedisServer::start();
    let dir = tempfile::tempdir().unwrap();
    let emu = tls_emulator(dir.path()).await;
    let proxy = ConnectProxy::start().await;
    write_scripts(dir.path(), &[("device.rhai", SEND)]);
    let admin: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let config = dir.path().join("pushgate.toml");
    let text = format!(
        "{}\n{}",
        config_text(
            &redis.url(),
            &admin.to_string(),
            &port_block("p", "device.rhai", "")
        ),
        tls_fcm_table(&emu, dir.path(), "emulator.pem", ""),
    );
    std::fs::write(&config, text).unwrap();
    let env = [
        ("HTTPS_PROXY", proxy.url()),
        ("NO_PROXY", "127.0.0.1".to_owned()),
    ];
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let process = tokio::task::block_in_place(|| Process::serve_with_env(&config, admin, &env));
    let addr = tokio::task::block_in_place(|| process.port_addr("p"));

    let ids = store_messages(addr, &[push("env-1")]).await;
    let mut con = redis.connection();
    eventually(Duration::from_secs(30), "env-1 sent", || {
        let status = record(&mut con, ids[0]).map(|r| r["status"].clone());
        async move { (status == Some(json!("sent"))).then_some(()) }
    })
    .await;
    assert_eq!(emu.stats().by_key.get("env-1"), Some(&1));
    let seen = proxy.seen();
    let port = emu.addr().port();
    assert!(
        !seen.tunnels.is_empty(),
        "HTTPS_PROXY was ignored: {seen:?}"
    );
    assert!(
        seen.asked.iter().all(|t| *t == format!("localhost:{port}")),
        "NO_PROXY=127.0.0.1 was ignored for the token grant: {seen:?}"
    );
    drop(process);
}

#[test]
fn check_fails_on_a_ca_file_without_a_certificate() {
    let dir = tempfile::tempdir().unwrap();
    write_scripts(dir.path(), &[("device.rhai", SEND)]);
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let emu = runtime.block_on(tls_emulator(dir.path()));
    let config = dir.path().join("pushgate.toml");
    let write = |ca_file: &str| {
        let text = format!(
            "{}\n{}",
            port_block("p", "device.rhai", ""),
            tls_fcm_table(
                &emu,
                dir.path(),
                ca_file,
                "proxy = \"http://10.0.0.1:3128\""
            )
        );
        std::fs::write(&config, text).unwrap();
    };

    write("emulator.pem");
    let (ok, stdout, stderr) = check_config(&config);
    assert!(ok, "{stdout}{stderr}");

    std::fs::write(dir.path().join("empty.pem"), "").unwrap();
    write("empty.pem");
    let (ok, _, stderr) = check_config(&config);
    assert!(!ok);
    assert!(
        stderr.contains("empty.pem") && stderr.contains("holds no PEM certificate"),
        "{stderr}"
    );
}

/// The test proxy itself: only CONNECT, only with its credentials when it has some.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_test_proxy_refuses_other_methods_and_wrong_credentials() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let proxy = ConnectProxy::with_credentials("pushgate", "dmz-secret").await;
    let target = proxy.addr();
    let ask = |head: String| async move {
        let mut stream = tokio::net::TcpStream::connect(target).await.unwrap();
        stream.write_all(head.as_bytes()).await.unwrap();
        let mut answer = Vec::new();
        let read = tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut answer));
        read.await.expect("the proxy answers and closes").unwrap();
        String::from_utf8_lossy(&answer).into_owned()
    };
    let get = ask("GET http://example.com/ HTTP/1.1\r\nHost: example.com\r\n\r\n".into()).await;
    assert!(get.starts_with("HTTP/1.1 405 "), "{get}");
    let connect = format!("CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n");
    let anonymous = ask(format!("{connect}\r\n")).await;
    assert!(anonymous.starts_with("HTTP/1.1 407 "), "{anonymous}");
    let wrong = ask(format!(
        "{connect}Proxy-Authorization: Basic cHVzaGdhdGU6d3Jvbmc=\r\n\r\n"
    ))
    .await;
    assert!(wrong.starts_with("HTTP/1.1 407 "), "{wrong}");
    let seen = proxy.seen();
    assert_eq!(seen.refused.len(), 3, "{seen:?}");
    assert_eq!(seen.asked.len(), 2, "{seen:?}");
    assert!(seen.tunnels.is_empty(), "{seen:?}");
}
