//! A real browser for tests: Debian's headless Chromium, driven over
//! WebDriver (Debian's chromedriver) with fantoccini.
//!
//! `scripts/test.sh` installs `chromium` and `chromium-driver`. Each
//! [`Chrome`] runs its own chromedriver on a free loopback port and its own
//! browser profile in a temporary directory; both end when it is dropped.
//! Screenshots go to `target/test-artifacts/browser/` (or
//! `$TOLLGATE_TEST_ARTIFACTS/browser/`), kept for people to look at.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use fantoccini::elements::Element;
use fantoccini::{Client, ClientBuilder, Locator};
use hyper_util::client::legacy::connect::HttpConnector;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};
use tokio::process::{Child, Command};

/// A headless Chromium session.
#[derive(Debug)]
pub struct Chrome {
    /// The WebDriver session.
    pub client: Client,
    /// User actions taken so far (page loads, clicks, form submissions).
    pub steps: u32,
    _driver: Child,
    _profile: tempfile::TempDir,
}

/// Where a test's screenshots go.
pub fn artifacts_dir() -> PathBuf {
    let base = std::env::var_os("TOLLGATE_TEST_ARTIFACTS")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/test-artifacts")
        });
    base.join("browser")
}

/// A started chromedriver and the port it listens on, or why it did not
/// start.
async fn start_driver() -> Result<(Child, u16), String> {
    let mut driver = Command::new("chromedriver")
        .arg("--port=0")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("start chromedriver (install Debian's chromium and chromium-driver; scripts/test.sh does)");
    let stdout = driver.stdout.take().expect("piped stdout");
    let mut stderr = driver.stderr.take().expect("piped stderr");
    let mut lines = BufReader::new(stdout).lines();
    let port = tokio::time::timeout(Duration::from_secs(30), async {
        while let Ok(Some(line)) = lines.next_line().await {
            if let Some(rest) = line.split("started successfully on port ").nth(1) {
                return rest.trim_end_matches('.').trim().parse::<u16>().ok();
            }
        }
        None
    })
    .await;
    match port {
        Ok(Some(port)) => {
            // Keep draining its output so it never blocks on a full pipe.
            tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
            tokio::spawn(async move {
                let _ = tokio::io::copy(&mut stderr, &mut tokio::io::sink()).await;
            });
            Ok((driver, port))
        }
        Ok(None) => {
            let mut said = String::new();
            let _ = tokio::time::timeout(Duration::from_secs(5), stderr.read_to_string(&mut said))
                .await;
            let status = driver
                .wait()
                .await
                .map(|s| s.to_string())
                .unwrap_or_default();
            Err(format!(
                "it exited ({status}) without saying its port: {}",
                said.trim()
            ))
        }
        Err(_) => Err("it did not say its port within 30 s".to_owned()),
    }
}

impl Chrome {
    /// Starts chromedriver and a headless browser whose viewport is `width`
    /// x `height` (below 500 px wide, a phone is emulated).
    pub async fn start(width: u32, height: u32) -> Self {
        // chromedriver now and then exits before it says its port (seen once
        // in CI-like runs, with nothing else wrong): started again, twice at
        // most, with what it said on stderr kept for the failure message.
        let mut failures = Vec::new();
        let (driver, port) = loop {
            match start_driver().await {
                Ok(started) => break started,
                Err(why) if failures.len() < 2 => failures.push(why),
                Err(why) => {
                    failures.push(why);
                    panic!("chromedriver did not start: {}", failures.join("; "));
                }
            }
        };
        let profile = tempfile::tempdir().expect("profile dir");
        let mut caps = serde_json::Map::new();
        let mut options = serde_json::json!({
            "args": [
                    "--headless=new",
                    // The tests run as root in a container: no sandbox there.
                    "--no-sandbox",
                    "--disable-dev-shm-usage",
                    "--disable-gpu",
                    "--no-first-run",
                    format!("--window-size={width},{height}"),
                    format!("--user-data-dir={}", profile.path().display()),
                ],
        });
        if width < 500 {
            // Desktop windows do not get narrower than 500 px: emulate a phone.
            options["mobileEmulation"] = serde_json::json!({
                "deviceMetrics": { "width": width, "height": height, "pixelRatio": 1.0 },
            });
        }
        caps.insert("goog:chromeOptions".to_owned(), options);
        let client = ClientBuilder::new(HttpConnector::new())
            .capabilities(caps)
            .connect(&format!("http://127.0.0.1:{port}"))
            .await
            .expect("open a Chromium session");
        Self {
            client,
            steps: 0,
            _driver: driver,
            _profile: profile,
        }
    }

    /// Opens a URL (one step).
    pub async fn open(&mut self, url: &str) {
        self.steps += 1;
        self.client.goto(url).await.expect("open the page");
    }

    /// Clicks the element `css` selects (one step).
    pub async fn click(&mut self, css: &str) {
        self.steps += 1;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            match self.find(css).await.click().await {
                Ok(()) => return,
                // Found on a page that was being replaced: find it again.
                Err(e) if tokio::time::Instant::now() < deadline && is_stale(&e) => {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Err(e) => panic!("click {css:?} on {}: {e}", self.url().await),
            }
        }
    }

    /// Clicks the link whose text is `text` (one step).
    pub async fn click_link(&mut self, text: &str) {
        self.steps += 1;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            let link = self
                .client
                .wait()
                .at_most(Duration::from_secs(10))
                .for_element(Locator::LinkText(text))
                .await
                .unwrap_or_else(|e| panic!("no link {text:?}: {e}"));
            match link.click().await {
                Ok(()) => return,
                // Found on a page that was being replaced: find it again.
                Err(e) if tokio::time::Instant::now() < deadline && is_stale(&e) => {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Err(e) => panic!("click the link {text:?} on {}: {e}", self.url().await),
            }
        }
    }

    /// Types into the field `css` selects (not a step: part of a form).
    pub async fn type_into(&self, css: &str, text: &str) {
        let field = self.find(css).await;
        field.clear().await.expect("clear the field");
        field.send_keys(text).await.expect("type");
    }

    /// The element `css` selects, waiting up to 10 s for it.
    pub async fn find(&self, css: &str) -> Element {
        match self
            .client
            .wait()
            .at_most(Duration::from_secs(10))
            .for_element(Locator::Css(css))
            .await
        {
            Ok(el) => el,
            Err(e) => panic!("no element {css:?} on {}: {e}", self.url().await),
        }
    }

    /// The visible text of the element `css` selects. A page that is being
    /// replaced (after a click or a form) can drop the element between
    /// finding and reading it: then it is found again on the new page.
    pub async fn text(&self, css: &str) -> String {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            match self.find(css).await.text().await {
                Ok(text) => return text,
                Err(e) if tokio::time::Instant::now() < deadline && is_stale(&e) => {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Err(e) => panic!("text of {css:?} on {}: {e}", self.url().await),
            }
        }
    }

    /// Waits up to 10 s until the text of the element `css` selects contains
    /// `needle` (the page a click leads to has loaded); returns that text.
    pub async fn wait_for_text(&self, css: &str, needle: &str) -> String {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            let text = self.text(css).await;
            if text.contains(needle) {
                return text;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "expected {needle:?} in {css:?} on {}, it says: {text}",
                self.url().await
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The current URL.
    pub async fn url(&self) -> String {
        self.client
            .current_url()
            .await
            .map(|u| u.to_string())
            .unwrap_or_default()
    }

    /// The page's HTML as the browser holds it now.
    pub async fn source(&self) -> String {
        self.client.source().await.expect("page source")
    }

    /// The page's title.
    pub async fn title(&self) -> String {
        self.client.title().await.expect("title")
    }

    /// Waits until the URL's path is `path`.
    pub async fn wait_for_path(&self, path: &str) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            let url = self.url().await;
            if url::Url::parse(&url).is_ok_and(|u| u.path() == path) {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "expected to reach {path}, still at {url}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Saves a PNG screenshot of the viewport as `name.png`; returns its path.
    pub async fn screenshot(&self, name: &str) -> PathBuf {
        let png = self.client.screenshot().await.expect("screenshot");
        let dir = artifacts_dir();
        std::fs::create_dir_all(&dir).expect("artifacts dir");
        let path = dir.join(format!("{name}.png"));
        std::fs::write(&path, png).expect("write screenshot");
        path
    }

    /// Ends the browser session.
    pub async fn close(self) {
        let _ = self.client.close().await;
    }
}

/// Whether a WebDriver error says the element left the page.
fn is_stale(e: &fantoccini::error::CmdError) -> bool {
    use fantoccini::error::{CmdError, ErrorStatus};
    match e {
        CmdError::Standard(w) => {
            w.error == ErrorStatus::StaleElementReference
                // Chromium's word for the same, when the page is replaced
                // while the element is read: "unhandled inspector error:
                // Node with given id does not belong to the document".
                || (w.error == ErrorStatus::UnknownError
                    && w.message.contains("does not belong to the document"))
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use fantoccini::error::{CmdError, ErrorStatus, WebDriver};

    use super::is_stale;

    #[test]
    fn elements_gone_from_a_replaced_page_are_stale_in_either_words() {
        let error =
            |status, message: &'static str| CmdError::Standard(WebDriver::new(status, message));
        assert!(is_stale(&error(
            ErrorStatus::StaleElementReference,
            "stale"
        )));
        assert!(is_stale(&error(
            ErrorStatus::UnknownError,
            "unknown error: unhandled inspector error: {\"code\":-32000,\"message\":\"Node with given id does not belong to the document\"}"
        )));
        assert!(!is_stale(&error(
            ErrorStatus::UnknownError,
            "chrome not reachable"
        )));
        assert!(!is_stale(&error(
            ErrorStatus::NoSuchElement,
            "no such element"
        )));
    }
}
