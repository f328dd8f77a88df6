//! The console in a real headless Chromium: sign in, flip a port's switch, search and
//! page the log, edit a script, watch counters move. Screenshots of every page land in
//! `target/screenshots/`.

use std::net::SocketAddr;
use std::time::Duration;

use serde_json::json;

use crate::browser_support::Browser;
use crate::support::*;

async fn sign_in(browser: &Browser, base: &str, user: &str) {
    browser.goto(&format!("{base}/login")).await;
    browser.fill("#user", user).await;
    browser.fill("#password", &format!("pw-{user}")).await;
    browser.click("#sign-in").await;
    browser.wait_for(".cards").await;
}

async fn accepts(addr: SocketAddr) -> bool {
    tokio::net::TcpStream::connect(addr).await.is_ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_works_the_console_in_a_real_browser() {
    let redis = RedisServer::start();
    let app = TestApp::sending(&redis, "fep-transfer").await;
    let addr = app.port_addr("fep-transfer").await;
    let base = format!("http://{}", app.app().admin_addr);
    let mut messages = Vec::new();
    for n in 0..230 {
        let mut m = message(&format!("B{n:04}"), n);
        m["csno"] = json!(if n % 2 == 0 {
            "1000000001"
        } else {
            "1000000002"
        });
        messages.push(m);
    }
    send_messages(addr, &messages).await;

    let browser = Browser::start().await;
    browser.goto(&format!("{base}/")).await;
    browser.wait_for("#sign-in").await;
    browser.screenshot("login").await;
    browser.fill("#user", "operator").await;
    browser.fill("#password", "wrong").await;
    browser.click("#sign-in").await;
    browser
        .wait_for_text("#login-error", "Wrong user name or password")
        .await;
    browser.fill("#password", "pw-operator").await;
    browser.click("#sign-in").await;
    browser.wait_for(".cards").await;

    // Counters move live while messages flow (SSE), without reloading.
    browser.wait_for_text("#live.on, .live.on", "●").await;
    browser
        .wait_for_text(
            ".card[data-port=\"fep-transfer\"] [data-field=\"received\"]",
            "230",
        )
        .await;
    send_messages(
        addr,
        &[
            message("live-1", 1),
            message("live-2", 2),
            message("live-3", 3),
        ],
    )
    .await;
    browser
        .wait_for_text(
            ".card[data-port=\"fep-transfer\"] [data-field=\"received\"]",
            "233",
        )
        .await;
    browser.screenshot("dashboard").await;

    // The switch stops the port for real, then starts it again, without a page load.
    browser
        .click(".card[data-port=\"fep-transfer\"] button.switch")
        .await;
    browser
        .wait_for_text(
            ".card[data-port=\"fep-transfer\"] [data-field=\"state\"]",
            "STOPPED",
        )
        .await;
    eventually(
        Duration::from_secs(10),
        "port refuses connections",
        || async { (!accepts(addr).await).then_some(()) },
    )
    .await;
    browser.screenshot("dashboard-port-stopped").await;
    browser
        .click(".card[data-port=\"fep-transfer\"] button.switch")
        .await;
    browser
        .wait_for_text(
            ".card[data-port=\"fep-transfer\"] [data-field=\"state\"]",
            "RUNNING",
        )
        .await;
    let addr = app.port_addr("fep-transfer").await;
    assert!(accepts(addr).await, "port takes connections again");

    // Search the log by csno and page through it.
    browser.goto(&format!("{base}/log")).await;
    browser.wait_for("#log").await;
    browser.wait_for_text("#page-info", "page 1 of 3").await;
    browser.screenshot("log").await;
    let field = browser.wait_for("#field").await;
    field.select_by_value("csno").await.expect("choose csno");
    browser.fill("#q", "1000000001").await;
    browser.click("#search-button").await;
    browser.wait_for_text("#page-info", "page 1 of 2").await;
    browser.wait_for_text("#total", "115").await;
    browser.screenshot("log-search-csno").await;
    browser.click("#next").await;
    browser.wait_for_text("#page-info", "page 2 of 2").await;
    let rows = browser
        .client
        .find_all(fantoccini::Locator::Css("#log tbody tr"))
        .await
        .unwrap();
    assert_eq!(rows.len(), 15, "the second page holds the rest");

    // One push's page.
    browser.click("#log tbody tr td a").await;
    browser.wait_for_text("h1", "Push").await;
    browser.screenshot("push").await;
    browser.goto(&format!("{base}/audit")).await;
    browser.wait_for_text("#audit", "port stop").await;
    browser.screenshot("audit").await;
    browser.close().await;
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_admin_fixes_a_script_in_the_browser_and_the_next_message_follows_it() {
    let redis = RedisServer::start();
    let app = TestApp::sending(&redis, "fep-transfer").await;
    let addr = app.port_addr("fep-transfer").await;
    let base = format!("http://{}", app.app().admin_addr);
    let browser = Browser::start().await;
    sign_in(&browser, &base, "admin").await;
    browser.goto(&format!("{base}/scripts")).await;
    browser.wait_for_text("body", "fep-transfer").await;
    browser.screenshot("scripts").await;
    browser.goto(&format!("{base}/scripts/fep-transfer")).await;
    browser.wait_for("#source").await;

    let broken = "fn route(msg) {\n    if msg.D_servicename == \"MKT\" {\n        return drop(\"no marketing\")\n    }\n    send_token(msg.device_id, msg.msg_title msg.msg_contents)\n}\n";
    browser.fill("#source", broken).await;
    browser.click("#check").await;
    let error = browser
        .wait_for_text(".compile-error", "send.rhai:5:")
        .await;
    assert!(error.contains("send.rhai:5:"), "{error}");
    browser.screenshot("script-compile-error").await;

    let fixed = "fn route(msg) {\n    if msg.D_servicename == \"MKT\" {\n        return drop(\"no marketing\")\n    }\n    send_token(msg.device_id, msg.msg_title, msg.msg_contents)\n}\n";
    browser.fill("#source", fixed).await;
    browser
        .fill(
            "#sample",
            r#"{"uniqueKey":"t1","D_servicename":"MKT","device_id":"x"}"#,
        )
        .await;
    browser.click("#try").await;
    browser.wait_for_text("#try-result", "no marketing").await;
    browser.click("#save").await;
    browser.wait_for_text("#script-notice", "Saved").await;
    browser.screenshot("script-saved").await;

    let mut m = message("mkt-1", 1);
    m["D_servicename"] = json!("MKT");
    let acks = send_messages(addr, &[m, message("trf-1", 2)]).await;
    let status = |i: usize| {
        let id: u64 = acks[i]["id"].as_str().unwrap().parse().unwrap();
        let store = app.app().store.clone();
        async move { store.record(id).await.unwrap().unwrap().to_json()["status"].clone() }
    };
    assert_eq!(
        status(0).await,
        "dropped",
        "the new rule applies to the next message"
    );
    assert_eq!(status(1).await, "queued");
    browser.goto(&format!("{base}/scripts/fep-transfer")).await;
    browser.click("a[href*=\"/versions/\"]").await;
    browser.wait_for_text(".diff", "no marketing").await;
    browser.screenshot("script-version-diff").await;
    browser.close().await;
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_viewer_watches_the_app_cards_and_a_queue_drain_live_and_filters_the_log_by_app() {
    let redis = RedisServer::start();
    let main = emulator(&["--fail-token", "bad-=INVALID_ARGUMENT"]).await;
    let card = emulator(&["--project", "card-project"]).await;
    // `card` sends one push a second: its bulk queue drains while the page is open.
    let (app, [p, _, c]) = two_apps(&redis, &main, &card, "rate = 1\nburst = 2").await;
    let mut refused = message("bad-1", 1);
    refused["device_id"] = json!("bad-1");
    store_messages(p, &[refused]).await;
    let batch: Vec<_> = (0..20).map(|n| message(&format!("card-{n}"), n)).collect();
    store_messages(c, &batch).await;
    let base = format!("http://{}", app.app().admin_addr);

    let browser = Browser::start().await;
    sign_in(&browser, &base, "viewer").await;
    browser
        .wait_for_text(
            ".card[data-app=\"default\"] [data-field=\"errors\"]",
            "INVALID_ARGUMENT 1",
        )
        .await;
    let due = "tr[data-queue=\"card/bulk\"] [data-field=\"due\"]";
    let first = browser.wait_for(due).await.text().await.unwrap();
    assert!(first.parse::<u64>().unwrap() > 0, "{first}");
    // The count moves without a page load.
    eventually(
        Duration::from_secs(15),
        "the due count to move live",
        || async {
            let now = browser.wait_for(due).await.text().await.ok()?;
            (now != first).then_some(())
        },
    )
    .await;
    browser.screenshot("dashboard-apps").await;
    browser
        .client
        .execute("document.getElementById('queues').scrollIntoView()", vec![])
        .await
        .expect("scroll to the queue card");
    browser.screenshot("dashboard-queues").await;

    browser.goto(&format!("{base}/log")).await;
    let app_filter = browser.wait_for("#app-filter").await;
    app_filter
        .select_by_value("card")
        .await
        .expect("choose card");
    let lane_filter = browser.wait_for("#lane-filter").await;
    lane_filter
        .select_by_value("bulk")
        .await
        .expect("choose bulk");
    browser.click("#search-button").await;
    browser.wait_for_text("#total", "20").await;
    browser.screenshot("log-filtered-by-app-and-lane").await;
    browser.click("#log tbody tr td a").await;
    browser.wait_for_text("#push-lane", "bulk").await;
    browser.screenshot("push-with-app-and-lane").await;
    browser.close().await;
    app.shutdown().await;
}
