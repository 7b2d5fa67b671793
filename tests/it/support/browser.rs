//! A real Chromium, headless, driven through its WebDriver (`chromedriver`) with fantoccini:
//! started per test with a profile of its own, killed on drop. The methods are synchronous, like
//! the rest of the harness; each waits boundedly and panics naming what it waited for.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::{Client, ClientBuilder, Locator};
use hyper_util::client::legacy::connect::HttpConnector;
use serde_json::{Value, json};
use tempfile::TempDir;

use super::tool;

/// How long a page condition may take to hold.
const PAGE_DEADLINE: Duration = Duration::from_secs(30);

/// A headless Chromium session.
pub struct Browser {
    runtime: tokio::runtime::Runtime,
    client: Option<Client>,
    driver: std::process::Child,
    profile: TempDir,
}

impl Browser {
    /// Starts chromedriver on a free loopback port and a headless Chromium through it, with a
    /// window of `width` × `height` pixels.
    pub fn start(width: u32, height: u32) -> Browser {
        let chromium = tool("chromium", "chromium");
        let driver_bin = tool("chromedriver", "chromium-driver");
        let port = free_port();
        let driver = Command::new(driver_bin)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start chromedriver");
        let profile = TempDir::with_prefix("orange-chromium-").expect("temp dir");
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
        let options = json!({
            "binary": chromium,
            "args": [
                "--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                "--no-first-run", "--disable-extensions", "--disable-background-networking",
                format!("--window-size={width},{height}"),
                format!("--user-data-dir={}", profile.path().display()),
            ],
            "prefs": {
                "download.default_directory": profile.path().join("downloads"),
                "download.prompt_for_download": false,
            },
        });
        let mut capabilities = serde_json::Map::new();
        capabilities.insert("goog:chromeOptions".into(), options);
        let url = format!("http://127.0.0.1:{port}");
        let deadline = Instant::now() + Duration::from_secs(30);
        let client = loop {
            let attempt = runtime.block_on(async {
                ClientBuilder::new(HttpConnector::new())
                    .capabilities(capabilities.clone())
                    .connect(&url)
                    .await
            });
            match attempt {
                Ok(client) => break client,
                Err(e) if Instant::now() < deadline => {
                    let _ = e;
                    std::thread::sleep(Duration::from_millis(100));
                }
                Err(e) => panic!("cannot start a Chromium session through chromedriver: {e}"),
            }
        };
        Browser { runtime, client: Some(client), driver, profile }
    }

    fn client(&self) -> &Client {
        // Only `drop` takes the client out.
        self.client.as_ref().expect("the session is open")
    }

    /// Loads `url`.
    pub fn open(&self, url: &str) {
        self.runtime.block_on(self.client().goto(url)).unwrap_or_else(|e| panic!("open {url}: {e}"));
    }

    /// The value of `script` (a function body: `return ...`) run in the page.
    pub fn eval(&self, script: &str) -> Value {
        self.runtime
            .block_on(self.client().execute(script, Vec::new()))
            .unwrap_or_else(|e| panic!("{script}: {e}"))
    }

    /// Waits until `condition` (a JavaScript expression) is true in the page.
    pub fn wait_for(&self, what: &str, condition: &str) {
        let script = format!("try {{ return Boolean({condition}); }} catch (e) {{ return false; }}");
        let deadline = Instant::now() + PAGE_DEADLINE;
        while self.eval(&script) != Value::Bool(true) {
            assert!(
                Instant::now() < deadline,
                "timed out after {PAGE_DEADLINE:?} waiting for {what}; the page says:\n{}",
                self.text("body")
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Waits until the element `css` shows `text` (in its rendered text).
    pub fn wait_for_text(&self, css: &str, text: &str) {
        let condition = format!(
            "(document.querySelector({css}) || {{}}).innerText.includes({text})",
            css = json!(css),
            text = json!(text)
        );
        self.wait_for(&format!("{css} to show {text:?}"), &condition);
    }

    /// The rendered text of the first element matching `css` ("" when none does).
    pub fn text(&self, css: &str) -> String {
        let script =
            format!("const e = document.querySelector({}); return e ? e.innerText : '';", json!(css));
        self.eval(&script).as_str().unwrap_or_default().to_owned()
    }

    /// How many elements match `css`.
    pub fn count(&self, css: &str) -> usize {
        let script = format!("return document.querySelectorAll({}).length;", json!(css));
        self.eval(&script).as_u64().unwrap_or(0) as usize
    }

    /// Clicks the element `css`, as a user does.
    pub fn click(&self, css: &str) {
        self.runtime
            .block_on(async {
                let element =
                    self.client().wait().at_most(PAGE_DEADLINE).for_element(Locator::Css(css)).await?;
                element.click().await
            })
            .unwrap_or_else(|e| panic!("click {css}: {e}"));
    }

    /// Replaces what the field `css` holds with `text`, typed as a user does.
    pub fn type_into(&self, css: &str, text: &str) {
        self.runtime
            .block_on(async {
                let element =
                    self.client().wait().at_most(PAGE_DEADLINE).for_element(Locator::Css(css)).await?;
                element.clear().await?;
                element.send_keys(text).await
            })
            .unwrap_or_else(|e| panic!("type into {css}: {e}"));
    }

    /// Picks the option `value` of the select `css`.
    pub fn select(&self, css: &str, value: &str) {
        self.runtime
            .block_on(async {
                let element =
                    self.client().wait().at_most(PAGE_DEADLINE).for_element(Locator::Css(css)).await?;
                element.select_by_value(value).await
            })
            .unwrap_or_else(|e| panic!("select {value} in {css}: {e}"));
    }

    /// Where the browser saves downloads.
    pub fn downloads_dir(&self) -> PathBuf {
        self.profile.path().join("downloads")
    }

    /// Whether a JavaScript dialog (`alert`, `confirm`) is open.
    pub fn alert_open(&self) -> bool {
        self.runtime.block_on(self.client().get_alert_text()).is_ok()
    }

    /// Writes a screenshot of the window to `target/screenshots/NAME.png` and returns its path.
    pub fn screenshot(&self, name: &str) -> PathBuf {
        let png =
            self.runtime.block_on(self.client().screenshot()).unwrap_or_else(|e| panic!("screenshot: {e}"));
        let dir = screenshots_dir();
        std::fs::create_dir_all(&dir).expect("create target/screenshots");
        let path = dir.join(format!("{name}.png"));
        std::fs::write(&path, png).expect("write the screenshot");
        path
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        if let Some(client) = self.client.take() {
            let _ = self
                .runtime
                .block_on(async { tokio::time::timeout(Duration::from_secs(10), client.close()).await });
        }
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

/// `target/screenshots/`, beside the test binaries' temp directory.
pub fn screenshots_dir() -> PathBuf {
    let tmp = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
    tmp.parent().map_or_else(|| tmp.join("screenshots"), |target| target.join("screenshots"))
}

fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind a free port");
    listener.local_addr().expect("local address").port()
}
