//! The admin JSON API: keys, scopes, and port control.

use std::time::Duration;

use crate::support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ports_api_needs_a_key_with_the_right_scope_and_controls_ports() {
    let redis = RedisServer::start();
    let ports = format!(
        "{}{}",
        port_block("a", "transfer.rhai", ""),
        port_block("b", "transfer.rhai", "autostart = false")
    );
    let app = TestApp::transferring(&redis, &ports).await;
    let admin = app.app().admin_addr;
    let addr_a = app.port_addr("a").await;

    let call = move |method: &'static str, path: &'static str, key: Option<&'static str>| {
        tokio::task::spawn_blocking(move || http(admin, method, path, key))
    };
    let (status, _) = call("GET", "/healthz", None).await.unwrap();
    assert_eq!(status, 200);
    let (status, body) = call("GET", "/api/v1/ports", None).await.unwrap();
    assert_eq!(status, 401, "{body}");
    let (status, _) = call("GET", "/api/v1/ports", Some("pgk_wrong"))
        .await
        .unwrap();
    assert_eq!(status, 401);
    let (status, body) = call("GET", "/api/v1/ports", Some(READ_ONLY_KEY))
        .await
        .unwrap();
    assert_eq!(status, 200);
    let states: Vec<(String, String)> = body
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["name"].as_str().unwrap().into(),
                p["state"].as_str().unwrap().into(),
            )
        })
        .collect();
    assert_eq!(
        states,
        [
            ("a".into(), "running".into()),
            ("b".into(), "stopped".into())
        ]
    );

    let (status, body) = call("POST", "/api/v1/ports/a/stop", Some(READ_ONLY_KEY))
        .await
        .unwrap();
    assert_eq!(status, 403, "{body}");
    let (status, body) = call("POST", "/api/v1/ports/a/stop", Some(TEST_KEY))
        .await
        .unwrap();
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["state"], "stopped");
    assert!(
        tokio::net::TcpStream::connect(addr_a).await.is_err(),
        "a stopped port refuses connections"
    );

    let (status, body) = call("POST", "/api/v1/ports/b/start", Some(TEST_KEY))
        .await
        .unwrap();
    assert_eq!(status, 200, "{body}");
    let addr_b = app.port_addr("b").await;
    send_one_ok(addr_b, "via-b", 1).await;

    let (status, body) = call("POST", "/api/v1/ports/a/restart", Some(TEST_KEY))
        .await
        .unwrap();
    assert_eq!(status, 200, "{body}");
    app.port_addr("a").await;

    let (status, _) = call("POST", "/api/v1/ports/nope/start", Some(TEST_KEY))
        .await
        .unwrap();
    assert_eq!(status, 404);
    let (status, _) = call("DELETE", "/api/v1/ports/a", Some(TEST_KEY))
        .await
        .unwrap();
    assert_eq!(status, 405);
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_port_that_cannot_bind_is_failed_and_restarts_with_backoff() {
    let redis = RedisServer::start();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap();
    let ports =
        format!("[[port]]\nname = \"busy\"\naddr = \"{addr}\"\nscript = \"transfer.rhai\"\n");
    let app = TestApp::transferring(&redis, &ports).await;
    let sup = app.app().supervisor.clone();
    let view = eventually(Duration::from_secs(10), "port failed", || {
        let sup = sup.clone();
        async move { sup.port("busy").await.filter(|v| v.restarts >= 1) }
    })
    .await;
    assert!(
        view.last_error.as_deref().unwrap_or("").contains("binding"),
        "{view:?}"
    );
    drop(taken);
    eventually(
        Duration::from_secs(15),
        "port running once the address is free",
        || {
            let sup = sup.clone();
            async move {
                sup.port("busy")
                    .await
                    .filter(|v| v.state == pushgate::supervisor::PortState::Running)
            }
        },
    )
    .await;
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_port_added_with_a_broken_script_stays_stopped_until_its_script_compiles() {
    let redis = RedisServer::start();
    let app = TestApp::transferring(&redis, &port_block("a", "transfer.rhai", "")).await;
    app.port_addr("a").await;
    write_scripts(app.dir.path(), &[("broken.rhai", "fn route(msg) { msg. }")]);
    let ports = format!(
        "{}{}",
        port_block("a", "transfer.rhai", ""),
        port_block("b", "broken.rhai", "")
    );
    std::fs::write(
        &app.config_path,
        config_text(&redis.url(), "127.0.0.1:0", &ports),
    )
    .unwrap();
    let changes = app.app().reload().await.expect("config loads");
    assert_eq!(changes.added.len(), 1);
    let b = app.app().supervisor.port("b").await.unwrap();
    assert_eq!(b.state, pushgate::supervisor::PortState::Failed);
    assert!(
        b.script_error
            .as_deref()
            .unwrap_or("")
            .contains("broken.rhai:1:"),
        "{b:?}"
    );

    let admin = app.app().admin_addr;
    let (status, body) = tokio::task::spawn_blocking(move || {
        http(admin, "POST", "/api/v1/ports/b/start", Some(TEST_KEY))
    })
    .await
    .unwrap();
    assert_eq!(status, 409, "{body}");
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("no compiled script"),
        "{body}"
    );

    write_scripts(app.dir.path(), &[("broken.rhai", TRANSFER_SCRIPT)]);
    app.app().reload().await.expect("config loads");
    let addr = app.port_addr("b").await;
    send_one_ok(addr, "fixed", 1).await;
    assert_eq!(
        app.app().supervisor.port("b").await.unwrap().script_error,
        None
    );
    app.shutdown().await;
}
