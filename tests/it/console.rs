//! The console over HTTP: roles, sessions, CSRF, masking, escaping, flush, resend,
//! scripts and the audit log.

use std::time::Duration;

use serde_json::{Value, json};

use crate::support::*;

async fn console() -> (RedisServer, TestApp, std::net::SocketAddr) {
    let redis = RedisServer::start();
    let app = TestApp::sending(&redis, "p").await;
    let addr = app.port_addr("p").await;
    (redis, app, addr)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_page_answers_each_role_within_its_rights() {
    let (_redis, app, addr) = console().await;
    let ids = store_messages(addr, &[message("page-1", 1)]).await;
    let push = format!("/push/{}", ids[0]);
    let pages = [
        "/",
        "/log",
        "/log?field=csno&q=0000000001",
        push.as_str(),
        "/scripts",
        "/scripts/p",
        "/audit",
        "/consents",
        "/log.csv",
    ];
    for role in ["viewer", "operator", "admin"] {
        let mut web = Web::new(app.app().admin_addr);
        web.sign_in(role).await;
        for path in pages {
            let page = web.get(path).await;
            assert_eq!(page.status, 200, "{role} GET {path}: {}", page.body);
            if path != "/log.csv" {
                assert!(
                    page.body.contains(&format!("role-{role}")),
                    "{role} GET {path} shows who is signed in"
                );
            }
        }
        let flush = web.get("/log/flush").await;
        assert_eq!(
            flush.status,
            if role == "admin" { 200 } else { 403 },
            "{role} flush page"
        );
        let dashboard = web.get("/").await;
        let switch_enabled = !dashboard.body.contains("operators only");
        assert_eq!(switch_enabled, role != "viewer", "{role} port switch");
        let editor = web.get("/scripts/p").await;
        assert_eq!(
            editor.body.contains("id=\"save\""),
            role == "admin",
            "{role} may save scripts"
        );
    }
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_is_served_without_a_session_except_open_paths() {
    let (_redis, app, _) = console().await;
    let mut web = Web::new(app.app().admin_addr);
    let page = web.get("/").await;
    assert_eq!((page.status, page.location()), (303, "/login"));
    for path in [
        "/log",
        "/push/1",
        "/scripts",
        "/audit",
        "/consents",
        "/events",
        "/log.csv",
    ] {
        let page = web.request("GET", path, &[], &[]).await;
        assert_eq!(page.status, 401, "{path}");
    }
    let page = web.request("POST", "/ports/p/stop", &[], &[]).await;
    assert_eq!(page.status, 401);
    assert_eq!(web.get("/healthz").await.status, 200, "healthz is open");
    let login = web.get("/login").await;
    assert_eq!(login.status, 200);
    let csp = login
        .headers
        .get("content-security-policy")
        .unwrap()
        .to_str()
        .unwrap();
    assert!(
        csp.contains("script-src 'self'") && !csp.contains("unsafe-inline"),
        "{csp}"
    );
    assert_eq!(login.headers.get("x-frame-options").unwrap(), "DENY");
    assert_eq!(
        login.headers.get("x-content-type-options").unwrap(),
        "nosniff"
    );
    assert!(login.headers.get("referrer-policy").is_some());
    assert!(!login.body.contains("<script>"), "no inline script");
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn state_changes_without_the_csrf_token_are_refused() {
    let (_redis, app, _) = console().await;
    let mut web = Web::new(app.app().admin_addr);
    web.sign_in("operator").await;
    let page = web.request("POST", "/ports/p/stop", &[], &[]).await;
    assert_eq!(page.status, 403, "form without token");
    let page = web
        .request("POST", "/ports/p/stop", &[("csrf", "0000")], &[])
        .await;
    assert_eq!(page.status, 403, "form with a wrong token");
    let page = web.request("POST", "/api/v1/ports/p/stop", &[], &[]).await;
    assert_eq!(page.status, 403, "fetch without X-CSRF-Token");
    assert_eq!(
        app.app().supervisor.port("p").await.unwrap().state,
        pushgate::supervisor::PortState::Running
    );

    let csrf = web.csrf.clone();
    let page = web
        .request(
            "POST",
            "/api/v1/ports/p/stop",
            &[],
            &[("x-csrf-token", &csrf)],
        )
        .await;
    assert_eq!(page.status, 200, "{}", page.body);
    assert_eq!(
        app.app().supervisor.port("p").await.unwrap().state,
        pushgate::supervisor::PortState::Stopped
    );
    let page = web.post("/ports/p/start", &[]).await;
    assert_eq!(page.status, 303, "{}", page.body);
    app.port_addr("p").await;

    let mut viewer = Web::new(app.app().admin_addr);
    viewer.sign_in("viewer").await;
    assert_eq!(
        viewer.post("/ports/p/stop", &[]).await.status,
        403,
        "viewers may not stop ports"
    );
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_expire_when_idle_or_too_old_and_end_on_sign_out() {
    let (redis, app, _) = console().await;
    let mut web = Web::new(app.app().admin_addr);
    web.sign_in("viewer").await;
    let key = format!("pg:session:{}", web.session_token());
    let mut con = redis.connection();
    let ttl: i64 = redis::cmd("PTTL").arg(&key).query(&mut con).unwrap();
    assert!(
        ttl > 29 * 60_000 && ttl <= 30 * 60_000,
        "idle timeout of 30 min set: {ttl}"
    );
    // Idle expiry is Redis's TTL: shorten it, let it pass, and the session is gone.
    let _: () = redis::cmd("PEXPIRE")
        .arg(&key)
        .arg(50)
        .query(&mut con)
        .unwrap();
    eventually(Duration::from_secs(5), "session key expired", || {
        let key = key.clone();
        let mut con = redis.connection();
        async move {
            (!redis::cmd("EXISTS")
                .arg(&key)
                .query::<bool>(&mut con)
                .unwrap())
            .then_some(())
        }
    })
    .await;
    assert_eq!(web.get("/log").await.status, 303, "idle session ends");

    // Absolute timeout: a session signed in 13 hours ago ends even if used.
    web.sign_in("viewer").await;
    let key = format!("pg:session:{}", web.session_token());
    let text: String = redis::cmd("GET").arg(&key).query(&mut con).unwrap();
    let mut session: Value = serde_json::from_str(&text).unwrap();
    session["created_ms"] = json!(pushgate::clock::now_ms() - 13 * 3_600_000);
    let _: () = redis::cmd("SET")
        .arg(&key)
        .arg(session.to_string())
        .arg("PX")
        .arg(60_000)
        .query(&mut con)
        .unwrap();
    assert_eq!(
        web.get("/log").await.status,
        303,
        "session past its absolute timeout ends"
    );

    web.sign_in("viewer").await;
    assert_eq!(web.get("/log").await.status, 200);
    let page = web.post("/logout", &[]).await;
    assert_eq!(page.status, 303);
    assert_eq!(web.get("/log").await.status, 303, "signed out");
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repeated_failed_sign_ins_are_throttled() {
    let (_redis, app, _) = console().await;
    let mut web = Web::new(app.app().admin_addr);
    for _ in 0..5 {
        let page = web.try_sign_in("admin", "wrong").await;
        assert_eq!(page.status, 401);
        assert!(page.body.contains("Wrong user name or password"));
    }
    let page = web.try_sign_in("admin", "pw-admin").await;
    assert_eq!(
        page.status, 429,
        "the right password is refused while throttled"
    );
    assert!(
        page.body.contains("Too many failed sign-ins"),
        "{}",
        page.body
    );
    // Another user is not affected.
    web.sign_in("operator").await;
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn viewers_see_masked_numbers_and_message_text_is_inert() {
    let (_redis, app, addr) = console().await;
    let mut m = message("xss", 7);
    m["msg_title"] = json!("<script>alert(1)</script><img src=x onerror=alert(2)>이체");
    m["cust_telno"] = json!("01098765432");
    m["csno"] = json!("5550001234");
    let ids = store_messages(addr, &[m]).await;
    let push = format!("/push/{}", ids[0]);

    let mut viewer = Web::new(app.app().admin_addr);
    viewer.sign_in("viewer").await;
    for path in ["/log", push.as_str()] {
        let body = viewer.get(path).await.body;
        assert!(
            body.contains("010-****-5432"),
            "{path} masks the phone number"
        );
        assert!(
            !body.contains("01098765432"),
            "{path} leaks the phone number"
        );
        assert!(
            !body.contains("5550001234"),
            "{path} leaks the customer number"
        );
        assert!(
            body.contains("&#60;script&#62;alert(1)&#60;/script&#62;"),
            "{path} escapes the title"
        );
        assert!(
            !body.contains("<script>alert"),
            "{path} renders a live script"
        );
        assert!(!body.contains("<img src=x"), "{path} renders a live tag");
        assert!(body.contains("이체"), "{path} keeps the Korean text");
    }
    let csv = viewer.get("/log.csv").await.body;
    assert!(
        csv.contains("010-****-5432") && !csv.contains("01098765432"),
        "CSV is masked too"
    );

    let mut operator = Web::new(app.app().admin_addr);
    operator.sign_in("operator").await;
    assert!(
        operator.get("/log").await.body.contains("01098765432"),
        "operators see the number"
    );
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_log_pages_searches_and_filters() {
    let (_redis, app, addr) = console().await;
    let mut messages = Vec::new();
    for n in 0..250 {
        let mut m = message(&format!("L{n:03}"), n);
        m["csno"] = json!(if n % 2 == 0 {
            "7770000001"
        } else {
            "7770000002"
        });
        m["msg_title"] = json!(if n % 50 == 0 {
            "긴급 공지"
        } else {
            "이체 완료"
        });
        messages.push(m);
    }
    store_messages(addr, &messages).await;
    let mut web = Web::new(app.app().admin_addr);
    web.sign_in("operator").await;

    let page = web.get("/log").await.body;
    assert!(page.contains("page 1 of 3"), "250 records, 100 a page");
    assert!(page.contains(">250</b> records"));
    let first_row = |body: &str| {
        body.split("<td><a href=\"/push/")
            .nth(1)
            .and_then(|r| r.split('"').next())
            .map(str::to_owned)
    };
    assert_eq!(first_row(&page).as_deref(), Some("250"), "newest first");
    let page = web.get("/log?order=oldest&page=3").await.body;
    assert!(page.contains("page 3 of 3"));
    assert_eq!(first_row(&page).as_deref(), Some("201"));

    let page = web.get("/log?field=csno&q=7770000001").await.body;
    assert!(
        page.contains("page 1 of 2") && page.contains(">125</b> records"),
        "indexed search"
    );
    let page = web.get("/log?field=csno&q=7770000001&page=2").await.body;
    assert_eq!(page.matches("<td><a href=\"/push/").count(), 25);

    let page = web
        .get("/log?field=msg_title&q=%EA%B8%B4%EA%B8%89")
        .await
        .body;
    assert!(
        page.contains(">5</b> records"),
        "substring search on the title"
    );
    let page = web
        .get("/log?status=queued&field=D_servicename&q=TRF")
        .await
        .body;
    assert!(page.contains(">125</b> records"), "bitmap field AND status");
    let page = web.get("/log?status=sent").await.body;
    assert!(page.contains(">0</b> records"));
    let page = web
        .get("/log?from=2000-01-01%2000:00&to=2000-01-02%2000:00")
        .await
        .body;
    assert!(
        page.contains(">0</b> records"),
        "time range before any record"
    );
    let page = web.get("/log?from=bad").await.body;
    assert!(page.contains("from must look like"));

    let csv = web.get("/log.csv?field=csno&q=7770000002").await.body;
    assert_eq!(csv.lines().count(), 126, "header + 125 rows");
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flush_asks_for_confirmation_naming_the_count_then_deletes_only_our_keys() {
    let (redis, app, addr) = console().await;
    store_messages(
        addr,
        &[message("f1", 1), message("f2", 2), message("f3", 3)],
    )
    .await;
    let mut con = redis.connection();
    let _: () = redis::cmd("SET")
        .arg("other:app:key")
        .arg("keep me")
        .query(&mut con)
        .unwrap();
    let mut web = Web::new(app.app().admin_addr);
    web.sign_in("admin").await;
    let page = web.get("/log/flush").await;
    assert!(
        page.body.contains("id=\"flush-count\">3<"),
        "names how many will go"
    );
    let page = web.post("/log/flush", &[("confirm", "3")]).await;
    assert_eq!(page.status, 409, "refused while a port runs");
    assert!(page.body.contains("Stop every port"), "{}", page.body);
    assert_eq!(web.post("/ports/p/stop", &[]).await.status, 303);
    let page = web.post("/log/flush", &[("confirm", "2")]).await;
    assert_eq!(page.status, 409, "a stale count is refused");
    let page = web.post("/log/flush", &[("confirm", "3")]).await;
    assert_eq!(page.status, 200, "{}", page.body);
    let left: u64 = redis::cmd("HLEN")
        .arg("pg:keyIndex")
        .query(&mut con)
        .unwrap();
    assert_eq!(left, 0);
    let kept: String = redis::cmd("GET")
        .arg("other:app:key")
        .query(&mut con)
        .unwrap();
    assert_eq!(kept, "keep me");
    let audit = web.get("/audit?action=flush").await;
    assert!(
        audit.body.contains("3 records"),
        "{} {}",
        audit.status,
        audit.body
    );
    // Ids are never reused after a flush, and the listing counts only what is there.
    assert_eq!(web.post("/ports/p/start", &[]).await.status, 303);
    let addr = app.port_addr("p").await;
    let ids = store_messages(addr, &[message("after-flush", 9)]).await;
    assert_eq!(ids, [4], "the id counter survives the flush");
    assert!(web.get("/log").await.body.contains(">1</b> records"));
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_resends_a_failed_push_and_it_is_audited() {
    let redis = RedisServer::start();
    let emu = emulator(&["--fail-token", "bad-=INVALID_ARGUMENT"]).await;
    let (app, addr) = start_delivering(&redis, &emu, "", "").await;
    let mut m = message("resend-me", 1);
    m["device_id"] = json!("bad-token");
    let id = store_messages(addr, &[m]).await[0];
    let store = app.app().store.clone();
    eventually(Duration::from_secs(10), "push failed", || {
        let store = store.clone();
        async move {
            store
                .record(id)
                .await
                .ok()
                .flatten()
                .map(|r| r.to_json())
                .filter(|r| r["status"] == "failed")
        }
    })
    .await;
    let mut viewer = Web::new(app.app().admin_addr);
    viewer.sign_in("viewer").await;
    assert!(
        !viewer
            .get(&format!("/push/{id}"))
            .await
            .body
            .contains("id=\"resend\"")
    );
    let mut web = Web::new(app.app().admin_addr);
    web.sign_in("operator").await;
    let page = web.get(&format!("/push/{id}")).await;
    assert!(page.body.contains("id=\"resend\""));
    assert!(
        page.body.contains("INVALID_ARGUMENT"),
        "the attempt and FCM's answer are shown"
    );
    let page = web.post(&format!("/push/{id}/resend"), &[]).await;
    assert!(
        page.body.contains("Queued to be sent again"),
        "{}",
        page.body
    );
    let record = eventually(Duration::from_secs(10), "second attempt", || {
        let store = store.clone();
        async move {
            store
                .record(id)
                .await
                .ok()
                .flatten()
                .map(|r| r.to_json())
                .filter(|r| r["attempts"] == 2)
        }
    })
    .await;
    assert_eq!(record["status"], "failed");
    assert!(
        web.get("/audit?action=resend")
            .await
            .body
            .contains(&format!("push {id}"))
    );
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scripts_check_try_save_with_versions_and_restore() {
    let (_redis, app, addr) = console().await;
    let mut web = Web::new(app.app().admin_addr);
    web.sign_in("admin").await;
    web.get("/scripts/p").await;

    let broken = "fn route(msg) {\n    let x = ;\n}\n";
    let page = web
        .post("/scripts/p", &[("action", "check"), ("source", broken)])
        .await;
    assert!(
        page.body.contains("send.rhai:2:"),
        "compile error with line: {}",
        page.body
    );
    let page = web
        .post("/scripts/p", &[("action", "save"), ("source", broken)])
        .await;
    assert!(
        page.body.contains("compile-error"),
        "a broken script is not saved"
    );

    let drop_all = "fn route(msg) { drop(\"maintenance\") }\n";
    let page = web
        .post(
            "/scripts/p",
            &[
                ("action", "try"),
                ("source", drop_all),
                ("sample", r#"{"uniqueKey":"t"}"#),
            ],
        )
        .await;
    assert!(
        page.body.contains("maintenance"),
        "try shows the decision: {}",
        page.body
    );
    assert_eq!(
        app.app().store.record_count().await.unwrap(),
        0,
        "try has no side effects"
    );

    let page = web
        .post("/scripts/p", &[("action", "save"), ("source", drop_all)])
        .await;
    assert!(page.body.contains("Saved"), "{}", page.body);
    let on_disk = std::fs::read_to_string(app.dir.path().join("send.rhai")).unwrap();
    assert_eq!(on_disk, drop_all);
    let ids = store_messages(addr, &[message("after-save", 1)]).await;
    let record = app
        .app()
        .store
        .record(ids[0])
        .await
        .unwrap()
        .unwrap()
        .to_json();
    assert_eq!(
        record["status"], "dropped",
        "the saved rule applies to the next message"
    );

    let editor = web.get("/scripts/p").await.body;
    let version = editor
        .split("/scripts/p/versions/")
        .nth(1)
        .and_then(|r| r.split('"').next())
        .expect("a version is listed")
        .to_owned();
    let diff = web
        .get(&format!("/scripts/p/versions/{version}"))
        .await
        .body;
    assert!(
        diff.contains("class=\"ins\">+ fn route(msg) { drop"),
        "diff shows the change: {diff}"
    );
    let page = web
        .post(
            "/scripts/p",
            &[("action", "restore"), ("restore", &version)],
        )
        .await;
    assert!(page.body.contains("Restored"), "{}", page.body);
    assert_eq!(
        std::fs::read_to_string(app.dir.path().join("send.rhai")).unwrap(),
        SEND
    );
    let ids = store_messages(addr, &[message("after-restore", 2)]).await;
    assert_eq!(
        app.app()
            .store
            .record(ids[0])
            .await
            .unwrap()
            .unwrap()
            .to_json()["status"],
        "queued"
    );
    assert_eq!(
        web.get("/scripts/p/versions/..%2F..%2Fetc%2Fpasswd")
            .await
            .status,
        404
    );

    let audit = web.get("/audit").await.body;
    for action in ["sign-in", "script save", "script restore"] {
        assert!(audit.contains(action), "audit shows {action}");
    }
    let only = web.get("/audit?action=restore").await.body;
    assert!(!only.contains(">sign-in<"), "filtered");
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_script_error_push_is_routed_again_once_the_script_is_fixed() {
    let redis = RedisServer::start();
    let broken = "fn route(msg) { if msg.D_servicename == \"TRF\" { throw \"bug in rule\" } drop(\"other\") }";
    let app = TestApp::start(
        &redis,
        &port_block("p", "send.rhai", ""),
        &[("send.rhai", broken)],
    )
    .await;
    let addr = app.port_addr("p").await;
    let ids = store_messages(addr, &[message("stuck", 0)]).await;
    let store = app.app().store.clone();
    assert_eq!(
        store.record(ids[0]).await.unwrap().unwrap().to_json()["status"],
        "script_error"
    );

    let mut web = Web::new(app.app().admin_addr);
    web.sign_in("admin").await;
    let push = format!("/push/{}", ids[0]);
    assert!(web.get(&push).await.body.contains("id=\"reroute\""));
    web.get("/scripts/p").await;
    let page = web
        .post("/scripts/p", &[("action", "save"), ("source", SEND)])
        .await;
    assert!(page.body.contains("Saved"), "{}", page.body);
    let page = web.post(&format!("{push}/reroute"), &[]).await;
    assert!(
        page.body.contains("Routed again: now queued"),
        "{}",
        page.body
    );
    let record = store.record(ids[0]).await.unwrap().unwrap().to_json();
    assert_eq!(record["status"], "queued");
    assert!(record.get("error").is_none(), "{record}");
    assert_eq!(
        record["decision"]["push"]["target"]["token"],
        record["device_id"]
    );
    assert!(
        store.due_at(ids[0]).await.unwrap().is_some(),
        "queued for the sender"
    );
    assert!(store.has_bit("status", "queued", ids[0]).await.unwrap());
    assert!(
        !store
            .has_bit("status", "script_error", ids[0])
            .await
            .unwrap()
    );
    let page = web.post(&format!("{push}/reroute"), &[]).await;
    assert_eq!(page.status, 409, "a queued push is not routed again");
    assert!(
        web.get("/audit?action=route")
            .await
            .body
            .contains(&format!("push {}", ids[0]))
    );
    app.shutdown().await;
}

/// Wait until push `id` is in `status`.
async fn wait_status(store: &pushgate::store::Store, id: u64, status: &str) {
    eventually(
        Duration::from_secs(15),
        &format!("push {id} {status}"),
        || {
            let store = store.clone();
            async move {
                let record = store.record(id).await.ok().flatten()?.to_json();
                (record["status"] == status).then_some(())
            }
        },
    )
    .await;
}

/// The HTML from `marker` to the end of its element `until` (a card, a table row).
fn section<'a>(body: &'a str, marker: &str, until: &str) -> &'a str {
    let start = body
        .find(marker)
        .unwrap_or_else(|| panic!("{marker} on the page:\n{body}"));
    let rest = &body[start..];
    &rest[..rest.find(until).unwrap_or(rest.len())]
}

/// The number in a row's `data-field="{field}"` cell.
fn cell_number(row: &str, field: &str) -> u64 {
    section(row, &format!("data-field=\"{field}\">"), "<")
        .split('>')
        .nth(1)
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{field} in {row}"))
}

/// `GET path` on the API with `key`: (status, JSON).
async fn api_get(web: &Web, path: &str, key: Option<&str>) -> (u16, Value) {
    let mut request = web.client().get(format!("{}{path}", web.base));
    if let Some(key) = key {
        request = request.bearer_auth(key);
    } else if let Some(cookie) = web.cookie() {
        request = request.header("cookie", cookie);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    let text = response.text().await.unwrap();
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

/// The first event of the dashboard's live stream.
async fn first_event(web: &Web) -> Value {
    let mut response = web
        .client()
        .get(format!("{}/events", web.base))
        .header("cookie", web.cookie().expect("signed in"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let mut text = String::new();
    loop {
        let chunk = tokio::time::timeout(Duration::from_secs(10), response.chunk())
            .await
            .expect("an event within 10 s")
            .unwrap()
            .expect("the stream stays open");
        text.push_str(&String::from_utf8_lossy(&chunk));
        if let Some((event, _)) = text
            .split("data: ")
            .nth(1)
            .and_then(|data| data.split_once("\n\n"))
        {
            return serde_json::from_str(event).unwrap();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_shows_each_app_s_state_and_every_queue_s_depth_to_viewers_too() {
    let redis = RedisServer::start();
    let main = emulator(&[
        "--fail-token",
        "bad-=INVALID_ARGUMENT",
        "--fail-token",
        "apns-=THIRD_PARTY_AUTH_ERROR",
    ])
    .await;
    let card = emulator(&["--project", "card-project"]).await;
    // `card` sends one push a second: most of a batch stays due.
    let (app, [p, _, c]) = two_apps(&redis, &main, &card, "rate = 1\nburst = 2").await;
    let store = app.app().store.clone();
    // `default`: one push accepted, one refused, then one that marks the app unhealthy.
    for (key, token, status) in [
        ("ok-1", "tok-ok-1", "sent"),
        ("bad-1", "bad-1", "failed"),
        ("apns-1", "apns-1", "failed"),
    ] {
        let mut m = message(key, 1);
        m["device_id"] = json!(token);
        let id = store_messages(p, &[m]).await[0];
        wait_status(&store, id, status).await;
    }
    // One push reserved for tomorrow waits in default's normal queue.
    let tomorrow =
        chrono::Utc::now().with_timezone(&chrono_tz::Asia::Seoul) + chrono::Duration::days(1);
    let mut later = message("later-1", 2);
    later["sndn_rsev_hour"] = json!(tomorrow.format("%Y%m%d%H%M%S").to_string());
    store_messages(p, &[later]).await;
    let batch: Vec<Value> = (0..30).map(|n| message(&format!("card-{n}"), n)).collect();
    store_messages(c, &batch).await;
    // What an app removed from the config leaves behind: a queue no sender reads.
    let mut con = redis.connection();
    let _: () = redis::cmd("ZADD")
        .arg("pg:due:ghost:urgent")
        .arg(pushgate::clock::now_ms() - 150_000)
        .arg(999_999)
        .query(&mut con)
        .unwrap();
    let _: () = redis::cmd("SADD")
        .arg("pg:queues")
        .arg("due:ghost:urgent")
        .query(&mut con)
        .unwrap();

    let mut web = Web::new(app.app().admin_addr);
    let body = web.sign_in("viewer").await.body;
    let main_card = section(&body, "data-app=\"default\"", "</article>");
    assert!(main_card.contains(">unhealthy<"), "{main_card}");
    assert!(
        main_card.contains("THIRD_PARTY_AUTH_ERROR at "),
        "says why: {main_card}"
    );
    assert!(
        main_card.contains("INVALID_ARGUMENT 1 · THIRD_PARTY_AUTH_ERROR 1"),
        "error classes with counts: {main_card}"
    );
    assert!(main_card.contains("per s · no cap"), "{main_card}");
    assert!(main_card.contains("expires "), "token expiry: {main_card}");
    let card_card = section(&body, "data-app=\"card\"", "</article>");
    assert!(card_card.contains(">ok<"), "{card_card}");
    assert!(card_card.contains("project card-project"), "{card_card}");
    assert!(
        card_card.contains(" / 1 per s"),
        "against its rate: {card_card}"
    );
    assert!(card_card.contains("expires "), "{card_card}");

    let bulk = section(&body, "data-queue=\"card/bulk\"", "</tr>");
    assert!(cell_number(bulk, "due") >= 10, "{bulk}");
    assert!(!bulk.contains("not configured"), "{bulk}");
    assert!(
        !section(bulk, "data-field=\"oldest\">", "</td>").contains('—'),
        "an age: {bulk}"
    );
    let normal = section(&body, "data-queue=\"default/normal\"", "</tr>");
    assert_eq!(cell_number(normal, "scheduled"), 1, "{normal}");
    assert_eq!(cell_number(normal, "due"), 0, "{normal}");
    let urgent = section(&body, "data-queue=\"default/urgent\"", "</tr>");
    assert!(urgent.contains("data-field=\"oldest\">—<"), "{urgent}");
    let ghost = section(&body, "data-queue=\"ghost/urgent\"", "</tr>");
    assert!(ghost.contains("not configured"), "flagged: {ghost}");
    assert!(ghost.contains("data-field=\"oldest\">2 min<"), "{ghost}");

    // The same data as JSON, for a read key and for the console's session.
    let (status, _) = api_get(&Web::new(app.app().admin_addr), "/api/v1/apps", None).await;
    assert_eq!(status, 401, "a key or a session");
    let (status, apps) = api_get(&web, "/api/v1/apps", Some(READ_ONLY_KEY)).await;
    assert_eq!(status, 200, "{apps}");
    let names: Vec<&str> = apps
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["default", "card"]);
    assert_eq!(apps[0]["state"], "unhealthy");
    assert_eq!(apps[0]["unhealthy"]["class"], "THIRD_PARTY_AUTH_ERROR");
    assert_eq!(
        apps[0]["errors"],
        json!({"INVALID_ARGUMENT": 1, "THIRD_PARTY_AUTH_ERROR": 1})
    );
    assert_eq!(apps[0]["rate"], Value::Null);
    assert_eq!(apps[1]["state"], "ok");
    assert_eq!(apps[1]["rate"], 1);
    assert_eq!(apps[1]["project"], "card-project");
    assert!(
        apps[1]["token_expires_at"].as_i64().unwrap() > pushgate::clock::now_ms(),
        "{apps}"
    );
    let (status, queues) = api_get(&web, "/api/v1/queues", None).await;
    assert_eq!(status, 200, "the console's session may read it: {queues}");
    let queue = |app: &str, lane: &str| {
        queues
            .as_array()
            .unwrap()
            .iter()
            .find(|q| q["app"] == app && q["lane"] == lane)
            .unwrap_or_else(|| panic!("{app}/{lane} in {queues}"))
            .clone()
    };
    assert!(queue("card", "bulk")["due"].as_u64().unwrap() >= 10);
    assert!(queue("card", "bulk")["oldest_ms"].as_i64().unwrap() > 0);
    assert_eq!(queue("default", "normal")["scheduled"], 1);
    assert_eq!(queue("card", "urgent")["configured"], true);
    assert_eq!(queue("ghost", "urgent")["configured"], false);
    assert_eq!(queue("ghost", "urgent")["due"], 1);
    assert_eq!(
        queues.as_array().unwrap().len(),
        7,
        "three lanes of two apps and the orphan: {queues}"
    );

    // The live stream carries the cards and rows the page is drawn from.
    let event = first_event(&web).await;
    assert_eq!(event["apps"][0]["state"], "unhealthy", "{event}");
    assert_eq!(event["apps"][1]["name"], "card", "{event}");
    let live_bulk = event["queues"]
        .as_array()
        .unwrap()
        .iter()
        .find(|q| q["key"] == "card/bulk")
        .cloned()
        .unwrap_or_else(|| panic!("card/bulk in {event}"));
    assert!(live_bulk["due"].as_u64().unwrap() >= 1, "{event}");

    // And /metrics has a gauge per app and lane beside the old total.
    let metrics = web.get("/metrics").await.body;
    assert!(
        metrics.contains("pushgate_queue_lane_scheduled{app=\"default\",lane=\"normal\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("pushgate_queue_lane_due{app=\"ghost\",lane=\"urgent\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("pushgate_queue_oldest_seconds{app=\"card\",lane=\"bulk\"} "),
        "{metrics}"
    );
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("pushgate_queue_due ")),
        "{metrics}"
    );
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_log_filters_by_app_and_lane_with_every_kind_of_search() {
    let redis = RedisServer::start();
    let main = emulator(&[]).await;
    let card = emulator(&[]).await;
    let (app, [p, u, c]) = two_apps(&redis, &main, &card, "").await;
    // Ids 1-3 default/normal, 4-7 default/urgent, 8-9 card/bulk; ids 1 and 8 share a
    // customer number (so its index is a zset), and 8 is a TRF push.
    let mut normal: Vec<Value> = (0..3).map(|n| message(&format!("n-{n}"), n + 1)).collect();
    normal[0]["csno"] = json!("4440000001");
    let urgent: Vec<Value> = (0..4).map(|n| message(&format!("u-{n}"), n + 10)).collect();
    let mut bulk: Vec<Value> = (0..2).map(|n| message(&format!("b-{n}"), n + 20)).collect();
    bulk[0]["csno"] = json!("4440000001");
    let mut ids = store_messages(p, &normal).await;
    ids.extend(store_messages(u, &urgent).await);
    ids.extend(store_messages(c, &bulk).await);
    assert_eq!(ids, (1..=9).collect::<Vec<u64>>());
    let store = app.app().store.clone();
    for id in ids {
        wait_status(&store, id, "sent").await;
    }

    let mut web = Web::new(app.app().admin_addr);
    web.sign_in("operator").await;
    let log = web.get("/log").await.body;
    assert!(
        log.contains("<option value=\"card\" >card</option>"),
        "the app select lists the configured apps: {log}"
    );
    assert!(log.contains("<option value=\"bulk\" >bulk</option>"));
    let ids_of = |body: &str| -> Vec<u64> {
        body.split("<td><a href=\"/push/")
            .skip(1)
            .map(|r| r.split('"').next().unwrap().parse().unwrap())
            .collect()
    };
    let cases: &[(&str, &[u64])] = &[
        ("app=card", &[9, 8]),
        ("lane=urgent", &[7, 6, 5, 4]),
        ("app=default", &[7, 6, 5, 4, 3, 2, 1]),
        ("app=default&lane=bulk", &[]),
        ("app=card&lane=bulk&status=sent", &[9, 8]),
        ("app=card&status=failed", &[]),
        // An index entry of one record, then a zset (two records share the number).
        ("field=uuid_id&q=uuid-20&app=card", &[8]),
        ("field=uuid_id&q=uuid-20&app=default", &[]),
        ("field=csno&q=4440000001", &[8, 1]),
        ("field=csno&q=4440000001&app=card", &[8]),
        ("field=csno&q=4440000001&lane=normal&status=sent", &[1]),
        // A bitmap field, a unique key and a substring search, each with a filter.
        ("field=D_servicename&q=TRF&app=card", &[8]),
        ("field=uniqueKey&q=b-1&lane=bulk", &[9]),
        ("field=uniqueKey&q=b-1&lane=urgent", &[]),
        ("field=msg_contents&q=%EC%9E%85%EA%B8%88&app=card", &[9, 8]),
    ];
    for (query, expected) in cases {
        let body = web.get(&format!("/log?{query}")).await.body;
        assert_eq!(ids_of(&body), *expected, "/log?{query}");
        assert!(
            body.contains(&format!(">{}</b> records", expected.len())),
            "/log?{query} counts what it shows"
        );
    }
    let page = web.get("/log?app=card").await.body;
    let row = section(&page, "<td><a href=\"/push/9\"", "</tr>");
    assert!(
        row.contains("<td data-col=\"app\">card</td>") && row.contains(">bulk</td>"),
        "{row}"
    );
    assert!(
        page.contains("href=\"/log.csv?app=card\""),
        "the export keeps the filter"
    );
    let csv = web.get("/log.csv?app=card").await.body;
    let lines: Vec<&str> = csv.lines().collect();
    assert!(lines[0].starts_with("\u{feff}id,status,app,lane,"), "{csv}");
    assert_eq!(lines.len(), 3, "{csv}");
    assert!(
        lines[1].starts_with("\"9\",\"sent\",\"card\",\"bulk\","),
        "{csv}"
    );
    assert!(
        web.get("/log?app=Bad%20App")
            .await
            .body
            .contains("is not an app name")
    );

    let push = web.get("/push/5").await.body;
    assert!(push.contains("id=\"push-app\">default<"), "{push}");
    assert!(push.contains("id=\"push-lane\">urgent<"), "{push}");

    // The API filters the same way, beside a searched field.
    let (status, found) = api_get(
        &web,
        "/api/v1/pushes?csno=4440000001&app=card&lane=bulk",
        Some(TEST_KEY),
    )
    .await;
    assert_eq!(status, 200, "{found}");
    assert_eq!(found["total"], 1, "{found}");
    assert_eq!(found["pushes"][0]["id"], 8, "{found}");
    let (_, found) = api_get(&web, "/api/v1/pushes?lane=urgent", Some(TEST_KEY)).await;
    assert_eq!(found["total"], 4, "{found}");
    let (status, refused) = api_get(&web, "/api/v1/pushes?lane=fast", Some(TEST_KEY)).await;
    assert_eq!(status, 400, "{refused}");
    app.shutdown().await;
}
