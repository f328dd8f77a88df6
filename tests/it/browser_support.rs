//! Headless Chromium over WebDriver for console tests (docs/TESTING.md, "Headless Chromium
//! over WebDriver"): a private chromedriver per `Browser`, in its own process group with
//! HOME/TMPDIR in a scratch dir, killed as a group when the `Browser` is closed or dropped
//! (so no Chromium outlives a panicking test). Run browser tests one at a time.

#![allow(dead_code)]

use std::fs::{self, File};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::elements::Element;
use fantoccini::{Client, ClientBuilder, Locator};
use hyper_util::client::legacy::connect::HttpConnector;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::support::free_port;

const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "chromedriver";
/// How long `wait_for`, `wait_for_text`, `fill` and `click` wait for the page.
pub const WAIT: Duration = Duration::from_secs(10);
const DRIVER_READY: Duration = Duration::from_secs(30);
const SESSION_OPEN: Duration = Duration::from_secs(60);

/// A headless Chromium session driven through a private chromedriver.
/// One at a time per test binary: `start` waits until any other `Browser` is closed or dropped.
pub struct Browser {
    pub client: Client,
    driver: Driver,
    // Last: released only after the driver's process group is gone.
    _turn: tokio::sync::MutexGuard<'static, ()>,
}

/// Browser tests take turns (two cores gain nothing from parallel browsers).
static TURN: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
/// How long `start` waits for another test's browser to be closed.
const TURN_WAIT: Duration = Duration::from_secs(600);

/// The chromedriver child (leader of its own process group, Chromium included) and its
/// scratch dir. Dropping it kills the whole group, then removes the dir.
struct Driver {
    child: Child,
    port: u16,
    // Declared last: removed after `Drop::drop` has killed the group.
    dir: tempfile::TempDir,
}

impl Driver {
    fn pgid(&self) -> u32 {
        // process_group(0): the child leads a group whose id is its pid.
        self.child.id()
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("chromedriver.log")
    }

    fn log_tail(&self) -> String {
        let log = fs::read_to_string(self.log_path()).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }

    /// SIGKILL the whole group, reap chromedriver, and wait (bounded) until no member is left
    /// alive. Chromium's own children become zombies handed to init, which reaps them (on
    /// these machines about 2 s later); they hold no files, so the scratch dir can go now.
    fn kill_group(&mut self) {
        let group = format!("-{}", self.pgid());
        let _ = Command::new("kill")
            .args(["-KILL", "--", &group])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        let _ = self.child.kill();
        let _ = self.child.wait();
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline && group_alive(self.pgid()) {
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        self.kill_group();
    }
}

/// Whether any live (non-zombie) process is still in process group `pgid` (from /proc).
fn group_alive(pgid: u32) -> bool {
    let Ok(procs) = fs::read_dir("/proc") else {
        return false;
    };
    procs.flatten().any(|entry| {
        let Ok(stat) = fs::read_to_string(entry.path().join("stat")) else {
            return false;
        };
        // "pid (comm) state ppid pgrp ...": comm may hold spaces, so split after the last ')'.
        let Some((_, rest)) = stat.rsplit_once(')') else {
            return false;
        };
        let mut fields = rest.split_whitespace();
        let state = fields.next();
        let pgrp = fields.nth(1);
        pgrp == Some(pgid.to_string().as_str()) && state != Some("Z") && state != Some("X")
    })
}

/// One `GET /status`; the JSON is parsed as soon as it has arrived, because chromedriver
/// says `Connection: close` but keeps the socket open (reading to EOF hangs).
async fn driver_ready(port: u16) -> bool {
    let attempt = async {
        let mut stream = TcpStream::connect(("127.0.0.1", port)).await.ok()?;
        stream
            .write_all(
                format!(
                    "GET /status HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n"
                )
                .as_bytes(),
            )
            .await
            .ok()?;
        let mut buf = Vec::new();
        let mut chunk = [0u8; 4096];
        loop {
            let n = stream.read(&mut chunk).await.ok()?;
            if n == 0 {
                return None;
            }
            buf.extend_from_slice(&chunk[..n]);
            let Some(head_end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
                continue;
            };
            let body = &buf[head_end + 4..];
            // Skip a chunk-size line if there is one: start at the first '{'.
            let Some(start) = body.iter().position(|&b| b == b'{') else {
                continue;
            };
            let mut values =
                serde_json::Deserializer::from_slice(&body[start..]).into_iter::<Value>();
            match values.next() {
                Some(Ok(status)) => {
                    return Some(status["value"]["ready"].as_bool().unwrap_or(false));
                }
                Some(Err(e)) if e.is_eof() => continue,
                _ => return None,
            }
        }
    };
    matches!(
        tokio::time::timeout(Duration::from_secs(2), attempt).await,
        Ok(Some(true))
    )
}

impl Browser {
    /// Start chromedriver on a free port, wait for its `/status` to say ready, and open a
    /// headless session with a fresh `--user-data-dir`. Panics (with the driver's log) on failure.
    pub async fn start() -> Browser {
        let turn = tokio::time::timeout(TURN_WAIT, TURN.lock())
            .await
            .unwrap_or_else(|_| {
                panic!("another Browser stayed open for {TURN_WAIT:?} (only one at a time per test binary)")
            });
        let dir = tempfile::Builder::new()
            .prefix("pushgate-browser-")
            .tempdir()
            .expect("browser scratch dir");
        let home = dir.path().join("home");
        let tmp = dir.path().join("tmp");
        let profile = dir.path().join("profile");
        for d in [&home, &tmp, &profile] {
            fs::create_dir_all(d).expect("browser scratch subdir");
        }
        let log = File::create(dir.path().join("chromedriver.log")).expect("chromedriver log");
        let port = free_port();
        let child = Command::new(CHROMEDRIVER)
            .arg(format!("--port={port}"))
            .arg("--enable-chrome-logs")
            .env("HOME", &home)
            .env("TMPDIR", &tmp)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("chromedriver log"))
            .stderr(log)
            .process_group(0)
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot start {CHROMEDRIVER} ({e}); install it with tools/install-deps.sh browser")
            });
        let mut driver = Driver { child, port, dir };

        let deadline = Instant::now() + DRIVER_READY;
        while !driver_ready(port).await {
            if let Ok(Some(status)) = driver.child.try_wait() {
                panic!(
                    "chromedriver exited ({status}) before ready:\n{}",
                    driver.log_tail()
                );
            }
            if Instant::now() >= deadline {
                panic!(
                    "chromedriver not ready on port {port} after {DRIVER_READY:?}:\n{}",
                    driver.log_tail()
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }

        let caps = json!({
            "browserName": "chrome",
            "timeouts": { "pageLoad": 30_000, "script": 30_000, "implicit": 0 },
            "goog:chromeOptions": {
                "binary": CHROMIUM,
                "args": [
                    "--headless=new",
                    "--no-sandbox",
                    "--disable-gpu",
                    "--disable-dev-shm-usage",
                    "--disable-background-networking",
                    "--disable-component-update",
                    "--disable-sync",
                    "--no-first-run",
                    "--window-size=1280,900",
                    format!("--user-data-dir={}", profile.display()),
                ],
            },
        });
        let Value::Object(caps) = caps else {
            unreachable!()
        };
        let mut builder = ClientBuilder::new(HttpConnector::new());
        builder.capabilities(caps);
        let url = format!("http://127.0.0.1:{port}");
        let client = match tokio::time::timeout(SESSION_OPEN, builder.connect(&url)).await {
            Ok(Ok(client)) => client,
            Ok(Err(e)) => panic!("WebDriver session not created: {e}\n{}", driver.log_tail()),
            Err(_) => panic!(
                "WebDriver session not created within {SESSION_OPEN:?}\n{}",
                driver.log_tail()
            ),
        };
        Browser {
            client,
            driver,
            _turn: turn,
        }
    }

    /// The scratch `--user-data-dir` Chromium runs with.
    pub fn user_data_dir(&self) -> PathBuf {
        self.driver.dir.path().join("profile")
    }

    /// The process group of chromedriver and every Chromium process it started.
    pub fn pgid(&self) -> u32 {
        self.driver.pgid()
    }

    /// Save a PNG of the viewport to `target/screenshots/{name}.png` under the crate root
    /// and return its path.
    pub async fn screenshot(&self, name: &str) -> PathBuf {
        let png = self.client.screenshot().await.expect("screenshot");
        let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("target")
            .join("screenshots");
        fs::create_dir_all(&dir).expect("screenshot dir");
        let path = dir.join(format!("{name}.png"));
        fs::write(&path, png).expect("write screenshot");
        path
    }

    /// Close the session, then kill chromedriver's process group and remove the scratch dir.
    pub async fn close(self) {
        let Browser {
            client,
            driver,
            _turn,
        } = self;
        let _ = tokio::time::timeout(Duration::from_secs(10), client.close()).await;
        drop(driver);
        drop(_turn);
    }

    /// Load `url` (waits for the page load, up to the 30 s page-load timeout).
    pub async fn goto(&self, url: &str) {
        if let Err(e) = self.client.goto(url).await {
            panic!("goto {url}: {e}");
        }
    }

    /// Wait (up to `WAIT`) for an element matching `css` to exist.
    pub async fn wait_for(&self, css: &str) -> Element {
        match self
            .client
            .wait()
            .at_most(WAIT)
            .for_element(Locator::Css(css))
            .await
        {
            Ok(element) => element,
            Err(e) => panic!(
                "no element {css:?} within {WAIT:?} on {}: {e}",
                self.url().await
            ),
        }
    }

    /// Wait (up to `WAIT`) until the text of the element matching `css` contains `needle`;
    /// returns that text.
    pub async fn wait_for_text(&self, css: &str, needle: &str) -> String {
        let deadline = Instant::now() + WAIT;
        let mut last = None;
        loop {
            // Looked up again each time: a form post or a reload replaces the element.
            if let Ok(element) = self.client.find(Locator::Css(css)).await
                && let Ok(text) = element.text().await
            {
                if text.contains(needle) {
                    return text;
                }
                last = Some(text);
            }
            if Instant::now() >= deadline {
                panic!(
                    "{css:?} did not show {needle:?} within {WAIT:?} on {}; last text: {last:?}",
                    self.url().await
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Clear the field matching `css` and type `text` into it.
    pub async fn fill(&self, css: &str, text: &str) {
        let field = self.wait_for(css).await;
        field
            .clear()
            .await
            .unwrap_or_else(|e| panic!("clear {css:?}: {e}"));
        field
            .send_keys(text)
            .await
            .unwrap_or_else(|e| panic!("type into {css:?}: {e}"));
    }

    /// Click the element matching `css`.
    pub async fn click(&self, css: &str) {
        let element = self.wait_for(css).await;
        element
            .click()
            .await
            .unwrap_or_else(|e| panic!("click {css:?}: {e}"));
    }

    async fn url(&self) -> String {
        match self.client.current_url().await {
            Ok(url) => url.to_string(),
            Err(e) => format!("<unknown url: {e}>"),
        }
    }
}
