//! A real headless Chromium, driven through WebDriver (Debian's
//! `chromedriver`), for the dashboard's tests. Blocking calls over the
//! async client, as the rest of these tests are written; waits are for
//! conditions, polled, never fixed sleeps.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::{free_port, wait_until};
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{Value, json};

/// How long the page may take to show what a test waits for.
pub const SHOWN: Duration = Duration::from_secs(30);

pub struct Browser {
    runtime: tokio::runtime::Runtime,
    client: Option<Client>,
    driver: Child,
    profile: PathBuf,
    /// Where the page is served: `http://host:port`.
    pub origin: String,
}

fn executable(names: &[&str]) -> PathBuf {
    names
        .iter()
        .flat_map(|name| {
            ["/usr/bin", "/usr/local/bin", "/usr/lib/chromium"]
                .iter()
                .map(move |dir| PathBuf::from(dir).join(name))
        })
        .find(|path| path.exists())
        .unwrap_or_else(|| {
            panic!(
                "none of {names:?} is installed: scripts/test installs chromium and chromium-driver"
            )
        })
}

impl Browser {
    /// A fresh browser (its own profile) for pages of `origin`.
    pub fn start(origin: &str) -> Browser {
        let port = free_port();
        let driver = Command::new(executable(&["chromedriver"]))
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver starts");
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        // A profile of its own, so no state is shared between sessions.
        let profile =
            std::env::temp_dir().join(format!("skiff-chromium-{}-{port}", std::process::id()));
        let mut capabilities = serde_json::Map::new();
        capabilities.insert(
            "goog:chromeOptions".into(),
            json!({
                "binary": executable(&["chromium"]),
                "args": [
                    "--headless=new",
                    // Root in a container: Chromium's sandbox needs user
                    // namespaces it may not have.
                    "--no-sandbox",
                    "--disable-gpu",
                    "--disable-dev-shm-usage",
                    "--window-size=1400,1000",
                    format!("--user-data-dir={}", profile.display()),
                ],
            }),
        );
        let url = format!("http://127.0.0.1:{port}");
        let mut last = String::new();
        let mut client = None;
        assert!(
            wait_until(SHOWN, || {
                let connector = hyper_util::client::legacy::connect::HttpConnector::new();
                match runtime.block_on(
                    ClientBuilder::new(connector)
                        .capabilities(capabilities.clone())
                        .connect(&url),
                ) {
                    Ok(connected) => {
                        client = Some(connected);
                        true
                    }
                    Err(error) => {
                        last = error.to_string();
                        false
                    }
                }
            }),
            "no WebDriver session: {last}"
        );
        Browser {
            runtime,
            client,
            driver,
            profile,
            origin: origin.trim_end_matches('/').to_owned(),
        }
    }

    fn client(&self) -> &Client {
        self.client.as_ref().expect("a session")
    }

    /// Opens `path` of the origin.
    pub fn goto(&self, path: &str) {
        self.goto_url(&format!("{}{path}", self.origin));
    }

    pub fn goto_url(&self, url: &str) {
        self.runtime
            .block_on(self.client().goto(url))
            .unwrap_or_else(|e| panic!("open {url}: {e}"));
    }

    /// Runs `script` in the page (its `arguments` are `args`); its value.
    pub fn run(&self, script: &str, args: Vec<Value>) -> Value {
        self.runtime
            .block_on(self.client().execute(script, args))
            .unwrap_or_else(|e| panic!("script failed: {e}\n{script}"))
    }

    /// Runs an async `script`, which calls `arguments[arguments.length-1]`
    /// with its answer.
    pub fn run_async(&self, script: &str, args: Vec<Value>) -> Value {
        self.runtime
            .block_on(self.client().execute_async(script, args))
            .unwrap_or_else(|e| panic!("script failed: {e}\n{script}"))
    }

    /// The text of every element matching `css`, in document order.
    pub fn texts(&self, css: &str) -> Vec<String> {
        self.run(
            "return [...document.querySelectorAll(arguments[0])].map((e) => e.textContent);",
            vec![json!(css)],
        )
        .as_array()
        .map(|items| {
            items
                .iter()
                .map(|t| t.as_str().unwrap_or_default().to_owned())
                .collect()
        })
        .unwrap_or_default()
    }

    /// Waits until the elements matching `css` satisfy `condition` (given
    /// their texts); panics with what the page showed.
    pub fn wait_for(&self, css: &str, what: &str, condition: impl Fn(&[String]) -> bool) {
        let mut last = Vec::new();
        if wait_until(SHOWN, || {
            last = self.texts(css);
            condition(&last)
        }) {
            return;
        }
        let page = self.texts("main, #app");
        let state = self.run(
            "return {url: location.href, ready: document.readyState, signedIn: sessionStorage.getItem('skiff.token') !== null};",
            vec![],
        );
        panic!("the page never showed {what} ({css}): {last:?}\npage: {page:?}\nstate: {state}");
    }

    /// Waits for an element matching `css` to exist.
    pub fn wait_present(&self, css: &str) {
        self.wait_for(css, "the element", |found| !found.is_empty());
    }

    pub fn click(&self, css: &str) {
        self.wait_present(css);
        self.runtime
            .block_on(async { self.client().find(Locator::Css(css)).await?.click().await })
            .unwrap_or_else(|e| panic!("click {css}: {e}"));
    }

    /// Replaces the value of the input at `css` by typing `text`.
    pub fn type_into(&self, css: &str, text: &str) {
        self.wait_present(css);
        self.runtime
            .block_on(async {
                let input = self.client().find(Locator::Css(css)).await?;
                input.clear().await?;
                input.send_keys(text).await
            })
            .unwrap_or_else(|e| panic!("type into {css}: {e}"));
    }

    /// Types `text` into whatever has the focus (WebDriver's key codes,
    /// such as Enter `\u{e007}`, included).
    pub fn keys(&self, text: &str) {
        self.runtime
            .block_on(async { self.client().active_element().await?.send_keys(text).await })
            .unwrap_or_else(|e| panic!("typing into the focused element: {e}"));
    }

    pub fn count(&self, css: &str) -> usize {
        self.texts(css).len()
    }

    /// Saves the page as `target/ui-screenshots/NAME.png` (the test's
    /// artefact); returns where.
    pub fn screenshot(&self, name: &str) -> PathBuf {
        let png = self
            .runtime
            .block_on(self.client().screenshot())
            .expect("a screenshot");
        let dir = std::env::var_os("CARGO_TARGET_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target"))
            .join("ui-screenshots");
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(format!("{name}.png"));
        std::fs::write(&path, png).unwrap();
        path
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        if let Some(client) = self.client.take() {
            let _ = self.runtime.block_on(client.close());
        }
        let _ = self.driver.kill();
        let _ = self.driver.wait();
        let _ = std::fs::remove_dir_all(&self.profile);
    }
}
