//! A real headless Chromium for the console's tests: Debian's `chromium` driven through its
//! `chromedriver` over WebDriver (fantoccini, plain HTTP on loopback), and the accessibility
//! check every console page must pass (axe-core, vendored under `assets/axe/`).
//!
//! - [`ensure_chromium`] installs Debian's `chromium` and `chromium-driver` with apt-get
//!   when either binary is missing (root needed), one test process at a time.
//! - [`Browser::start`] starts a chromedriver in its own process group with a fresh profile
//!   directory and opens a session: headless, German content negotiation
//!   ([`ACCEPT_LANGUAGE`]), self-signed certificates accepted (the console serves HTTPS with
//!   the node's own CA), a fixed window ([`WINDOW`]). Dropping the [`Browser`] kills the
//!   whole group, so a panicking test leaves no Chromium behind. A `Browser` dereferences
//!   to its [`fantoccini::Client`].
//! - [`axe`] runs axe-core on the current page ([`AXE_TAGS`]: WCAG 2.0/2.1 A and AA) and
//!   returns the violations; [`assert_no_axe_violations`] panics listing them. The script is
//!   injected through WebDriver, which a page's Content-Security-Policy does not govern.
//! - [`console_messages`] reads what the page logged to its console since the last call,
//!   where Chromium reports each resource the Content-Security-Policy refused;
//!   [`assert_no_csp_violations`] waits for the page to settle and panics listing them.
//!   (KERN's icons are `data:` SVG masks: `img-src 'self'` alone refuses them.)
//! - [`screenshot`] saves the viewport as a PNG.

use fantoccini::wd::WebDriverCompatibleCommand;
use fantoccini::{Client, ClientBuilder};
use fs2::FileExt as _;
use hyper_util::client::legacy::connect::HttpConnector;
use std::os::unix::fs::MetadataExt as _;
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};
use tempfile::TempDir;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

/// Debian's Chromium (a wrapper script around `/usr/lib/chromium/chromium`).
pub const CHROMIUM: &str = "/usr/bin/chromium";
/// Debian's chromedriver (package `chromium-driver`, from the same source package as
/// `chromium`, so their versions always match).
pub const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
/// What [`ensure_chromium`] runs, for error messages and the README.
pub const INSTALL: &str = "apt-get install -y --no-install-recommends chromium chromium-driver";
/// The browser's viewport (what a page sees as `innerWidth`/`innerHeight`, and every
/// screenshot): width, height in CSS pixels.
pub const WINDOW: (u32, u32) = (1280, 900);
/// The browser's `Accept-Language` (`--accept-lang`; `--lang` is ignored when headless).
pub const ACCEPT_LANGUAGE: &str = "de-DE,de";
/// The axe-core rule tags [`axe`] runs: WCAG 2.0 and 2.1, levels A and AA (BITV 2.0).
pub const AXE_TAGS: [&str; 4] = ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa"];

/// axe-core's `axe.min.js` (origin, version and SHA-256 in `assets/README.md`).
const AXE_JS: &str = include_str!("../assets/axe/axe.min.js");
/// How long chromedriver may take to answer its `/status` after it was started.
const DRIVER_START_TIMEOUT: Duration = Duration::from_secs(20);
/// How often the start looks again.
const POLL: Duration = Duration::from_millis(25);
/// The lock file that lets one test process at a time run apt-get.
const INSTALL_LOCK: &str = "kurzdraht-chromium-install.lock";

/// What went wrong with the browser (the message says what and, where it helps, what to do).
pub struct BrowserError(pub String);

/// The message as it is (so that `expect` shows it line by line).
impl std::fmt::Debug for BrowserError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::fmt::Display for BrowserError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for BrowserError {}

fn err(what: impl std::fmt::Display) -> BrowserError {
    BrowserError(what.to_string())
}

fn chromium_present() -> bool {
    Path::new(CHROMIUM).is_file() && Path::new(CHROMEDRIVER).is_file()
}

/// Makes sure [`CHROMIUM`] and [`CHROMEDRIVER`] exist: when either is missing, installs
/// Debian's `chromium` and `chromium-driver` ([`INSTALL`], unpinned: driver and browser come
/// from one source package; `apt-get update` first when the package lists are missing or
/// stale). Test processes take turns through a file lock in the temporary directory, so two
/// never run apt-get at once (apt's own lock is waited for, too). Fails, saying what to run,
/// when not root or apt-get is not there or fails.
pub fn ensure_chromium() -> Result<(), BrowserError> {
    if chromium_present() {
        return Ok(());
    }
    let lock_path = std::env::temp_dir().join(INSTALL_LOCK);
    let lock = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .map_err(|e| err(format!("open {}: {e}", lock_path.display())))?;
    lock.lock_exclusive()
        .map_err(|e| err(format!("lock {}: {e}", lock_path.display())))?;
    // Another test process may have installed them while this one waited.
    let result = if chromium_present() {
        Ok(())
    } else {
        install_chromium()
    };
    // Unlocked when `lock` is closed, too; explicit so the order is plain.
    let _ = fs2::FileExt::unlock(&lock);
    result
}

fn install_chromium() -> Result<(), BrowserError> {
    let uid = std::fs::metadata("/proc/self")
        .map(|m| m.uid())
        .map_err(|e| err(format!("who am I (/proc/self: {e})")))?;
    if uid != 0 {
        return Err(err(format!(
            "{CHROMIUM} or {CHROMEDRIVER} is missing and installing them needs root (uid is \
             {uid}): run `sudo {INSTALL}`"
        )));
    }
    let started = Instant::now();
    let install = [
        "-o",
        "DPkg::Lock::Timeout=600",
        "install",
        "-y",
        "--no-install-recommends",
        "chromium",
        "chromium-driver",
    ];
    let mut out = apt_get(&install)?;
    if !out.status.success() {
        // Most often: no package lists yet (a fresh container) or stale ones.
        let update = apt_get(&["-o", "DPkg::Lock::Timeout=600", "update"])?;
        if !update.status.success() {
            return Err(err(format!(
                "apt-get update failed ({}): {}",
                update.status,
                tail(&update.stderr)
            )));
        }
        out = apt_get(&install)?;
    }
    if !out.status.success() || !chromium_present() {
        return Err(err(format!(
            "`{INSTALL}` failed ({}); {CHROMIUM} and {CHROMEDRIVER} are needed: {}",
            out.status,
            tail(&out.stderr)
        )));
    }
    eprintln!(
        "browser: installed Debian's chromium and chromium-driver in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

fn apt_get(args: &[&str]) -> Result<Output, BrowserError> {
    Command::new("apt-get")
        .args(args)
        .env("DEBIAN_FRONTEND", "noninteractive")
        .stdin(Stdio::null())
        .output()
        .map_err(|e| {
            err(format!(
                "{CHROMIUM} or {CHROMEDRIVER} is missing and apt-get cannot be run ({e}): install \
                 Debian's chromium and chromium-driver (`{INSTALL}`) or their equivalents"
            ))
        })
}

/// The last lines of a command's output, for error messages.
fn tail(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(bytes);
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(20)..].join("\n")
}

/// A chromedriver child process, leader of its own process group (Chromium and its helpers
/// join the group). Dropped: the whole group is killed with SIGKILL and the driver reaped;
/// then its profile directory is removed.
struct Driver {
    child: Child,
    /// Holds the user-data directory and chromedriver's log; removed after the kill.
    dir: TempDir,
}

impl Driver {
    fn log(&self) -> PathBuf {
        self.dir.path().join("chromedriver.log")
    }

    /// The last lines of chromedriver's log.
    fn log_tail(&self) -> String {
        std::fs::read(self.log()).map_or_else(|e| format!("(no log: {e})"), |b| tail(&b))
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        // `kill -KILL -- -<pgid>`: the driver, the browser and every helper process.
        let group = format!("-{}", self.child.id());
        let _ = Command::new("kill")
            .args(["-KILL", "--", &group])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A headless Chromium session (see the module documentation). Dereferences to the
/// WebDriver [`Client`]: `browser.goto(url)`, `browser.find(..)`, `axe(&browser)`.
pub struct Browser {
    client: Client,
    /// The user-data directory Chromium was started with (inside the driver's directory).
    user_data_dir: PathBuf,
    /// Dropped after `client` (field order): the session ends, then the group is killed.
    driver: Driver,
}

impl std::ops::Deref for Browser {
    type Target = Client;
    fn deref(&self) -> &Client {
        &self.client
    }
}

impl Browser {
    /// Installs Chromium when missing ([`ensure_chromium`]), starts chromedriver on a free
    /// loopback port in its own process group, waits until it answers and opens a session
    /// (capabilities in the module documentation; a fresh user-data directory).
    pub async fn start() -> Result<Browser, BrowserError> {
        tokio::task::spawn_blocking(ensure_chromium)
            .await
            .map_err(|e| err(format!("installing chromium: {e}")))??;
        let dir = tempfile::Builder::new()
            .prefix("kurzdraht-browser-")
            .tempdir()
            .map_err(|e| err(format!("a temporary directory for the browser: {e}")))?;
        let user_data_dir = dir.path().join("user-data");
        let port = crate::ports::free_loopback_addrs(1)
            .map_err(|e| err(format!("a free port for chromedriver: {e}")))?[0]
            .port();
        let log = dir.path().join("chromedriver.log");
        let child = Command::new(CHROMEDRIVER)
            .arg(format!("--port={port}"))
            .arg(format!("--log-path={}", log.display()))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .map_err(|e| err(format!("start {CHROMEDRIVER}: {e}")))?;
        let mut driver = Driver { child, dir };
        wait_for_driver(&mut driver, port).await?;
        let client = ClientBuilder::new(HttpConnector::new())
            .capabilities(capabilities(&user_data_dir))
            .connect(&format!("http://127.0.0.1:{port}"))
            .await
            .map_err(|e| {
                err(format!(
                    "open a Chromium session: {e}\nchromedriver's log:\n{}",
                    driver.log_tail()
                ))
            })?;
        size_viewport(&client).await?;
        Ok(Browser {
            client,
            user_data_dir,
            driver,
        })
    }

    /// The WebDriver client (also reached through `Deref`).
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// The user-data (profile) directory this browser was started with; removed on drop.
    pub fn user_data_dir(&self) -> &Path {
        &self.user_data_dir
    }

    /// The process group of chromedriver, Chromium and its helpers (killed on drop).
    pub fn process_group(&self) -> u32 {
        self.driver.child.id()
    }

    /// Ends the WebDriver session politely, then kills the process group (as dropping does).
    pub async fn close(self) -> Result<(), BrowserError> {
        let Browser { client, driver, .. } = self;
        let result = client
            .close()
            .await
            .map_err(|e| err(format!("close the browser session: {e}")));
        drop(driver);
        result
    }
}

/// The session's capabilities: Chromium headless as root, German, insecure certificates
/// accepted, a fixed window, its own profile.
fn capabilities(user_data_dir: &Path) -> serde_json::Map<String, serde_json::Value> {
    let (w, h) = WINDOW;
    let caps = serde_json::json!({
        "browserName": "chrome",
        "acceptInsecureCerts": true,
        // the page's console (CSP refusals among it) for `console_messages`
        "goog:loggingPrefs": {"browser": "ALL"},
        "goog:chromeOptions": {
            "binary": CHROMIUM,
            "args": [
                "--headless",
                "--no-sandbox",
                "--disable-dev-shm-usage",
                "--disable-gpu",
                format!("--accept-lang={ACCEPT_LANGUAGE}"),
                format!("--window-size={w},{h}"),
                format!("--user-data-dir={}", user_data_dir.display()),
                "--no-first-run",
                "--no-default-browser-check",
                "--hide-scrollbars",
            ],
        },
    });
    caps.as_object().cloned().unwrap_or_default()
}

/// Makes the viewport (what pages and screenshots see) exactly [`WINDOW`]: headless
/// Chromium still subtracts its (invisible) window frame from `--window-size`.
async fn size_viewport(client: &Client) -> Result<(), BrowserError> {
    let (w, h) = WINDOW;
    let frame = client
        .execute(
            "return [window.outerWidth - window.innerWidth, \
             window.outerHeight - window.innerHeight]",
            vec![],
        )
        .await
        .map_err(|e| err(format!("measure the window frame: {e}")))?;
    let (dw, dh): (u32, u32) = serde_json::from_value(frame.clone())
        .map_err(|e| err(format!("the window frame {frame}: {e}")))?;
    client
        .set_window_size(w + dw, h + dh)
        .await
        .map_err(|e| err(format!("set the window size: {e}")))?;
    let inner = client
        .execute("return [window.innerWidth, window.innerHeight]", vec![])
        .await
        .map_err(|e| err(format!("measure the viewport: {e}")))?;
    if inner != serde_json::json!([w, h]) {
        return Err(err(format!("the viewport is {inner}, not {w}x{h}")));
    }
    Ok(())
}

/// Waits until chromedriver's `/status` says it is ready; fails with its log if it exits
/// or does not answer within [`DRIVER_START_TIMEOUT`].
async fn wait_for_driver(driver: &mut Driver, port: u16) -> Result<(), BrowserError> {
    let started = Instant::now();
    loop {
        if let Ok(Some(status)) = driver.child.try_wait() {
            return Err(err(format!(
                "chromedriver exited at start ({status}); its log:\n{}",
                driver.log_tail()
            )));
        }
        match driver_status(port).await {
            Ok(body) if body.contains("\"ready\":true") => return Ok(()),
            seen if started.elapsed() >= DRIVER_START_TIMEOUT => {
                return Err(err(format!(
                    "chromedriver on port {port} not ready after {DRIVER_START_TIMEOUT:?} \
                     (last: {seen:?}); its log:\n{}",
                    driver.log_tail()
                )));
            }
            _ => tokio::time::sleep(POLL).await,
        }
    }
}

/// `GET /status` of a chromedriver: the answer's body (read up to its `Content-Length`;
/// chromedriver keeps the connection open).
async fn driver_status(port: u16) -> std::io::Result<String> {
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
    stream
        .write_all(b"GET /status HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        .await?;
    let read = async {
        let mut answer = Vec::new();
        let mut chunk = [0u8; 4096];
        loop {
            let n = stream.read(&mut chunk).await?;
            if n == 0 {
                return Ok(String::from_utf8_lossy(&answer).into_owned());
            }
            answer.extend_from_slice(&chunk[..n]);
            let text = String::from_utf8_lossy(&answer);
            if let Some((head, body)) = text.split_once("\r\n\r\n") {
                let length = head.lines().find_map(|l| {
                    let (name, value) = l.split_once(':')?;
                    name.eq_ignore_ascii_case("content-length")
                        .then(|| value.trim().parse::<usize>().ok())?
                });
                if length.is_some_and(|len| body.len() >= len) {
                    return Ok(body.to_string());
                }
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(2), read)
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "no answer"))?
}

/// One axe-core rule the page violates, with the nodes that violate it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AxeViolation {
    /// The rule, e.g. `label`, `color-contrast`.
    pub id: String,
    /// `minor`, `moderate`, `serious` or `critical` (axe may leave it out).
    pub impact: Option<String>,
    /// What the rule asks for, in one line.
    pub help: String,
    /// Deque's page on the rule.
    pub help_url: String,
    /// A CSS selector of each violating node (frames and shadow roots joined by ` >>> `).
    pub selectors: Vec<String>,
}

impl std::fmt::Display for AxeViolation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} ({}): {} — {}\n    at {}",
            self.id,
            self.impact.as_deref().unwrap_or("no impact given"),
            self.help,
            self.help_url,
            self.selectors.join("\n    at ")
        )
    }
}

/// Runs axe-core on the page the browser shows now, with the rules tagged [`AXE_TAGS`], and
/// returns its violations (empty: none). axe is injected through WebDriver's execute-script
/// each time (a page's CSP does not apply to it; the page needs no script of its own).
pub async fn axe(client: &Client) -> Result<Vec<AxeViolation>, BrowserError> {
    let script = format!(
        "const tags = arguments[0];\n{AXE_JS}\n;\
         return window.axe.run(document, {{runOnly: {{type: 'tag', values: tags}}}})\
         .then(r => r.violations.map(v => ({{id: v.id, impact: v.impact || null, help: v.help, \
         helpUrl: v.helpUrl, selectors: v.nodes.map(n => n.target.map(t => Array.isArray(t) ? \
         t.join(' >>> ') : String(t)).join(' >>> '))}})));"
    );
    let tags = serde_json::json!(AXE_TAGS);
    let value = client
        .execute(&script, vec![tags])
        .await
        .map_err(|e| err(format!("run axe-core on the page: {e}")))?;
    serde_json::from_value(value.clone())
        .map_err(|e| err(format!("axe-core's answer {value}: {e}")))
}

/// Runs [`axe`] and panics, naming `page` and listing every violation, if there is any.
pub async fn assert_no_axe_violations(client: &Client, page: &str) {
    let violations = axe(client)
        .await
        .unwrap_or_else(|e| panic!("accessibility check of {page}: {e}"));
    if !violations.is_empty() {
        let list: Vec<String> = violations.iter().map(|v| format!("- {v}")).collect();
        panic!(
            "{page}: axe-core found {} accessibility violation(s) (WCAG 2.1 AA):\n{}",
            violations.len(),
            list.join("\n")
        );
    }
}

/// One message of the page's console (`console.log`, errors, and Chromium's own reports
/// such as a refusal by the Content-Security-Policy).
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
pub struct ConsoleMessage {
    /// `SEVERE`, `WARNING`, `INFO`, `DEBUG`.
    pub level: String,
    /// Where it came from, e.g. `security`, `console-api`, `network` (when Chromium says).
    #[serde(default)]
    pub source: Option<String>,
    /// The text, e.g. `… Refused to load the image 'data:…' because it violates the following
    /// Content Security Policy directive: "img-src 'self'". …`.
    pub message: String,
}

impl ConsoleMessage {
    /// Whether this is a refusal by the page's Content-Security-Policy.
    pub fn is_csp_violation(&self) -> bool {
        self.message.contains("Content Security Policy")
    }
}

/// chromedriver's log command (`POST /session/{id}/se/log`, `{"type": "browser"}`): the
/// console entries since the last such call.
#[derive(Debug)]
struct BrowserLog;

impl WebDriverCompatibleCommand for BrowserLog {
    fn endpoint(
        &self,
        base_url: &url::Url,
        session_id: Option<&str>,
    ) -> Result<url::Url, url::ParseError> {
        base_url.join(&format!(
            "session/{}/se/log",
            session_id.unwrap_or_default()
        ))
    }

    fn method_and_body(&self, _request_url: &url::Url) -> (http::Method, Option<String>) {
        (
            http::Method::POST,
            Some(r#"{"type":"browser"}"#.to_string()),
        )
    }
}

/// What the pages logged to the browser's console since the previous call (each message is
/// returned once), oldest first.
pub async fn console_messages(client: &Client) -> Result<Vec<ConsoleMessage>, BrowserError> {
    let value = client
        .issue_cmd(BrowserLog)
        .await
        .map_err(|e| err(format!("read the browser's console: {e}")))?;
    serde_json::from_value(value.clone())
        .map_err(|e| err(format!("the browser's console {value}: {e}")))
}

/// Waits until the page has loaded and laid out everything it refers to (its fonts, its
/// stylesheets' images), then panics, naming `page` and listing them, if the page's
/// Content-Security-Policy refused anything since the last [`console_messages`] call.
pub async fn assert_no_csp_violations(client: &Client, page: &str) {
    settle(client)
        .await
        .unwrap_or_else(|e| panic!("wait for {page} to settle: {e}"));
    let refused: Vec<String> = console_messages(client)
        .await
        .unwrap_or_else(|e| panic!("the console of {page}: {e}"))
        .into_iter()
        .filter(ConsoleMessage::is_csp_violation)
        .map(|m| format!("- {}", m.message))
        .collect();
    assert!(
        refused.is_empty(),
        "{page}: the Content-Security-Policy refused {} thing(s):\n{}",
        refused.len(),
        refused.join("\n")
    );
}

/// Waits for the document to be complete, its fonts loaded and two frames painted (so
/// stylesheet images such as masks have been requested, or refused).
async fn settle(client: &Client) -> Result<(), BrowserError> {
    client
        .execute(
            "return new Promise(done => {
               const painted = () => requestAnimationFrame(() => requestAnimationFrame(done));
               const fonts = () => document.fonts.ready.then(painted);
               if (document.readyState === 'complete') { fonts(); }
               else { addEventListener('load', fonts, {once: true}); }
             })",
            vec![],
        )
        .await
        .map(|_| ())
        .map_err(|e| err(format!("wait for the page: {e}")))
}

/// Saves what the browser's viewport shows as a PNG at `path` (directories created).
pub async fn screenshot(client: &Client, path: &Path) -> Result<(), BrowserError> {
    let png = client
        .screenshot()
        .await
        .map_err(|e| err(format!("take a screenshot: {e}")))?;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| err(format!("{}: {e}", dir.display())))?;
    }
    std::fs::write(path, png).map_err(|e| err(format!("write {}: {e}", path.display())))
}

/// Clicks what `locator` finds and waits (at most 10 s) until the page it leads to has
/// loaded: a click that submits a form or follows a link returns before the browser has
/// loaded the answer, so the old document is marked and the new one awaited.
pub async fn click_to_next_page(b: &Client, locator: fantoccini::Locator<'_>) {
    b.execute("window.kurzdrahtOldPage = true; return true", vec![])
        .await
        .expect("mark the page");
    let target = b.find(locator).await.expect("the element to click");
    // Scrolled into view at once: KERN scrolls smoothly, which would move the element
    // under the pointer while the click lands.
    b.execute(
        "arguments[0].scrollIntoView({block: 'center', behavior: 'instant'}); return true",
        vec![serde_json::to_value(&target).expect("the element as an argument")],
    )
    .await
    .expect("scroll to the element");
    target.click().await.expect("click");
    for _ in 0..200 {
        let loaded = b
            .execute(
                "return window.kurzdrahtOldPage !== true && document.readyState === 'complete'",
                vec![],
            )
            .await
            .map(|v| v == true)
            .unwrap_or(false);
        if loaded {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    panic!("the page after the click did not load");
}

/// Types `value` into the field with id `id` (cleared first).
pub async fn fill(b: &Client, id: &str, value: &str) {
    let field = b
        .find(fantoccini::Locator::Id(id))
        .await
        .unwrap_or_else(|e| panic!("the field {id}: {e}"));
    field.clear().await.expect("clear the field");
    field.send_keys(value).await.expect("type into the field");
}

/// Sets the value of the field with id `id` by script: a date input (which takes typed dates
/// in the browser's locale order) or a select.
pub async fn set_value(b: &Client, id: &str, value: &str) {
    b.execute(
        "document.getElementById(arguments[0]).value = arguments[1]; return true",
        vec![serde_json::json!(id), serde_json::json!(value)],
    )
    .await
    .unwrap_or_else(|e| panic!("set {id}: {e}"));
}

/// Ticks the checkbox with id `id`.
pub async fn tick(b: &Client, id: &str) {
    b.execute(
        "document.getElementById(arguments[0]).checked = true; return true",
        vec![serde_json::json!(id)],
    )
    .await
    .unwrap_or_else(|e| panic!("tick {id}: {e}"));
}

/// The visible text of the page's main content.
pub async fn main_text(b: &Client) -> String {
    b.execute(
        "return (document.querySelector('main') || document.body).innerText",
        vec![],
    )
    .await
    .expect("the page's text")
    .as_str()
    .unwrap_or_default()
    .to_string()
}
