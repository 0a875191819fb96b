//! A headless Chromium driven over WebDriver: Debian's `chromium` and `chromium-driver`
//! (installed by `cargo xtask setup`; never a downloaded browser), for the console's browser
//! tests and its first-page benchmark.
//!
//! Each `Browser` runs its own `chromedriver` on a free loopback port, in a process group of
//! its own, with a fresh profile directory; dropping it kills the group (chromedriver and the
//! Chromium it started) and removes the profile, so a failing test leaves nothing running.
use std::{
    os::unix::process::CommandExt as _,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use fantoccini::{Client, ClientBuilder, Locator, elements::Element};

use crate::services::{Scratch, free_port, scratch};

/// The browser and its driver, as Debian installs them.
pub const CHROMIUM: &str = "/usr/bin/chromium";
pub const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
/// Window size of every screenshot: the console's smallest supported screen.
pub const WINDOW: (u32, u32) = (1280, 800);
/// How long chromedriver may take to answer its first session request.
const DRIVER_START: Duration = Duration::from_secs(20);
/// Default wait for an element or a condition in the page.
pub const WAIT: Duration = Duration::from_secs(15);
const POLL: Duration = Duration::from_millis(100);

/// A headless Chromium session.
pub struct Browser {
    pub client: Client,
    screenshots: PathBuf,
    _driver: Driver,
}

/// The chromedriver process group and the profile directory, removed on drop (also when
/// `Browser::start` panics half-way).
struct Driver {
    child: Child,
    /// Removed after the group is killed (fields drop after `Drop::drop`).
    _profile: Scratch,
}

impl Browser {
    /// Starts chromedriver and a headless Chromium; screenshots go to `screenshots`.
    pub async fn start(screenshots: &Path) -> Browser {
        for program in [CHROMIUM, CHROMEDRIVER] {
            assert!(
                Path::new(program).exists(),
                "{program} is missing: run `cargo xtask setup` (it installs chromium and chromium-driver)"
            );
        }
        std::fs::create_dir_all(screenshots).unwrap_or_else(|e| panic!("{}: {e}", screenshots.display()));
        let port = free_port();
        let profile = scratch("chromium");
        let child = Command::new(CHROMEDRIVER)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            // Its own group, so Drop can kill chromedriver and every Chromium process at once.
            .process_group(0)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {CHROMEDRIVER}: {e}"));
        let user_data_dir = format!("--user-data-dir={}", profile.display());
        let driver = Driver { child, _profile: profile };
        // The WebDriver client's TLS stack needs a process-wide provider (it stays unused: the
        // driver is plain HTTP on loopback). Another test may have installed it already.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let capabilities = serde_json::json!({
            "goog:chromeOptions": {
                "binary": CHROMIUM,
                "args": [
                    "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                    "--disable-background-networking", "--disable-component-update", "--disable-sync",
                    user_data_dir,
                    format!("--window-size={},{}", WINDOW.0, WINDOW.1),
                ],
            }
        });
        let serde_json::Value::Object(capabilities) = capabilities else { unreachable!("a JSON object") };
        let url = format!("http://127.0.0.1:{port}");
        let deadline = Instant::now() + DRIVER_START;
        let browser = Browser {
            client: loop {
                let mut builder = ClientBuilder::rustls().expect("WebDriver client");
                // Each attempt is cut off at the deadline too: a driver that accepted the
                // connection but never answers would otherwise hold it forever.
                let attempt = builder.capabilities(capabilities.clone()).connect(&url);
                match tokio::time::timeout_at(deadline.into(), attempt).await {
                    Ok(Ok(client)) => break client,
                    Ok(Err(e)) if Instant::now() >= deadline => panic!("chromedriver at {url} gave no session: {e}"),
                    Err(_) => panic!("chromedriver at {url} gave no session within {DRIVER_START:?}"),
                    Ok(Err(_)) => tokio::time::sleep(POLL).await,
                }
            },
            screenshots: screenshots.to_owned(),
            _driver: driver,
        };
        browser.client.set_window_size(WINDOW.0, WINDOW.1).await.expect("window size");
        browser
    }

    pub async fn goto(&self, url: &str) {
        self.client.goto(url).await.unwrap_or_else(|e| panic!("opening {url}: {e}"));
    }

    /// The element matching `css`, waiting up to `WAIT` for it to appear.
    pub async fn element(&self, css: &str) -> Element {
        match self.client.wait().at_most(WAIT).every(POLL).for_element(Locator::Css(css)).await {
            Ok(element) => element,
            Err(e) => panic!("no element {css} within {WAIT:?} ({e}); page: {}", self.page_text().await),
        }
    }

    /// Whether an element matches `css` now (no waiting).
    pub async fn has(&self, css: &str) -> bool {
        self.client.find(Locator::Css(css)).await.is_ok()
    }

    pub async fn click(&self, css: &str) {
        self.element(css).await.click().await.unwrap_or_else(|e| panic!("clicking {css}: {e}"));
    }

    /// Types `text` into the field matching `css`, after clearing it.
    pub async fn fill(&self, css: &str, text: &str) {
        let field = self.element(css).await;
        field.clear().await.unwrap_or_else(|e| panic!("clearing {css}: {e}"));
        field.send_keys(text).await.unwrap_or_else(|e| panic!("typing into {css}: {e}"));
    }

    /// Runs `script` (a function body; `arguments` holds `args`) in the page.
    pub async fn run(&self, script: &str, args: Vec<serde_json::Value>) -> serde_json::Value {
        self.client.execute(script, args).await.unwrap_or_else(|e| panic!("script failed: {e}\n{script}"))
    }

    /// Runs an async `script` whose last argument is the callback to call with its result.
    pub async fn run_async(&self, script: &str, args: Vec<serde_json::Value>) -> serde_json::Value {
        self.client.execute_async(script, args).await.unwrap_or_else(|e| panic!("script failed: {e}\n{script}"))
    }

    /// Waits until `condition` (a JavaScript expression) is truthy in the page; returns how
    /// long it took. Panics with `what` and the page's text after `timeout`.
    pub async fn wait_until(&self, what: &str, condition: &str, timeout: Duration) -> Duration {
        let started = Instant::now();
        let script = format!("return !!({condition});");
        loop {
            if self.run(&script, Vec::new()).await == serde_json::Value::Bool(true) {
                return started.elapsed();
            }
            if started.elapsed() > timeout {
                panic!("{what}: not within {timeout:?}; page: {}", self.page_text().await);
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// Loads `url` afresh and returns the time from the start of its navigation until an element
    /// matches `css` (measured by the page's own clock, `performance.now()`, so WebDriver's
    /// round trips are not counted). Panics after `WAIT`.
    pub async fn load_time(&self, url: &str, css: &str) -> Duration {
        // A hash route of the page already open would not load the document again.
        self.goto("about:blank").await;
        self.goto(url).await;
        let script = "const [css, limit, done] = arguments;
            const found = () => document.querySelector(css);
            if (found()) { done(performance.now()); return; }
            const observer = new MutationObserver(() => {
                if (found()) { observer.disconnect(); done(performance.now()); }
            });
            observer.observe(document, { childList: true, subtree: true, attributes: true });
            setTimeout(() => { observer.disconnect(); done(null); }, limit);";
        let limit = serde_json::Value::from(u64::try_from(WAIT.as_millis()).unwrap_or(u64::MAX));
        let ms = self.run_async(script, vec![css.into(), limit]).await;
        match ms.as_f64() {
            Some(ms) => Duration::from_secs_f64(ms / 1000.0),
            None => panic!("{url}: no element {css} within {WAIT:?}; page: {}", self.page_text().await),
        }
    }

    /// The visible text of the page (for failure messages), cut to a readable length.
    pub async fn page_text(&self) -> String {
        let text = self.client.execute("return document.body ? document.body.innerText : ''", Vec::new()).await;
        let text = text.ok().and_then(|v| v.as_str().map(str::to_owned)).unwrap_or_default();
        text.chars().take(2_000).collect()
    }

    /// Saves a PNG of the window as `<screenshots>/<name>.png` and returns its path.
    pub async fn screenshot(&self, name: &str) -> PathBuf {
        let png = self.client.screenshot().await.unwrap_or_else(|e| panic!("screenshot {name}: {e}"));
        let path = self.screenshots.join(format!("{name}.png"));
        std::fs::write(&path, png).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        path
    }

    /// Ends the WebDriver session (Drop then stops the driver).
    pub async fn close(self) {
        let _ = self.client.clone().close().await;
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        // The whole group: chromedriver and every Chromium process it started.
        if let Ok(group) = i32::try_from(self.child.id()) {
            // SAFETY: kill(2) takes no pointers; a group that is already gone only fails.
            unsafe { libc::kill(-group, libc::SIGKILL) };
        }
        let _ = self.child.wait();
    }
}
