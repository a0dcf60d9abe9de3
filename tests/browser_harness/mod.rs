//! What the browser tests share: a run of streamlens serving its dashboard on a free port, and a
//! headless Chromium page driven line by line through `tests/browser/live.mjs`.
#![allow(dead_code)]

use std::{path::PathBuf, process::Stdio, time::Duration};

use tokio::{
    io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines},
    process::{Child, ChildStdin, ChildStdout, Command},
};
use tokio_util::sync::CancellationToken;

/// Where the dashboard bundle is (`dashboard/build-client.sh` puts it there).
pub fn site_root() -> PathBuf {
    std::env::var_os("STREAMLENS_SITE_ROOT")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/site"))
}

/// The repository root, after checking the bundle and playwright-core are there.
pub fn prerequisites() -> PathBuf {
    let site = site_root();
    assert!(
        site.join("pkg/streamlens_dashboard.js").exists(),
        "no dashboard bundle in {}: run dashboard/build-client.sh",
        site.display()
    );
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    assert!(
        root.join("node_modules/playwright-core").exists(),
        "playwright-core missing: run `npm ci` in {}",
        root.display()
    );
    root
}

/// A pipeline run serving its dashboard.
pub struct Served {
    /// `http://127.0.0.1:<port>`.
    pub base: String,
    shutdown: CancellationToken,
    app: tokio::task::JoinHandle<anyhow::Result<streamlens::pipeline::RunSummary>>,
}

impl Served {
    /// Runs `config` with its dashboard on a free port and waits until the page answers.
    pub async fn start(mut config: streamlens::config::Config) -> Served {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        config.dashboard.enabled = true;
        config.dashboard.listen = ([127, 0, 0, 1], port).into();
        config.dashboard.site_root = site_root();
        let shutdown = CancellationToken::new();
        let app = tokio::spawn(streamlens::app::run(config, shutdown.clone()));
        let base = format!("http://127.0.0.1:{port}");
        for _ in 0..100 {
            if reqwest::get(&base).await.is_ok() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Served {
            base,
            shutdown,
            app,
        }
    }

    /// Stops the run; it must end without error.
    pub async fn stop(self) {
        self.shutdown.cancel();
        self.app.await.unwrap().unwrap();
    }
}

/// The page in headless Chromium, driven by `tests/browser/live.mjs` commands.
pub struct Page {
    child: Child,
    stdin: Option<ChildStdin>,
    lines: Lines<BufReader<ChildStdout>>,
}

impl Page {
    /// Opens `base` and waits for the script's `READY`.
    pub async fn open(base: &str) -> Page {
        let root = prerequisites();
        let mut child = Command::new("node")
            .arg(root.join("tests/browser/live.mjs"))
            .arg(base)
            .current_dir(&root)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .expect("node is needed for the browser test");
        let stdin = child.stdin.take();
        let lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let mut page = Page {
            child,
            stdin,
            lines,
        };
        assert_eq!(page.next_line().await, "READY");
        page
    }

    /// The script's next answer (60 s at most).
    pub async fn next_line(&mut self) -> String {
        tokio::time::timeout(Duration::from_secs(60), self.lines.next_line())
            .await
            .expect("the browser script answers within 60 s")
            .unwrap()
            .unwrap_or_default()
    }

    /// Sends one command line.
    pub async fn command(&mut self, line: &str) {
        self.stdin
            .as_mut()
            .expect("page still open")
            .write_all(format!("{line}\n").as_bytes())
            .await
            .unwrap();
    }

    /// Sends a command and returns its answer.
    pub async fn ask(&mut self, line: &str) -> String {
        self.command(line).await;
        self.next_line().await
    }

    /// Closes the page: the script answers `OK` only if the page logged no console errors.
    pub async fn close_without_console_errors(mut self) {
        drop(self.stdin.take());
        let done = self.next_line().await;
        assert_eq!(done, "OK", "the page logged errors");
        assert!(self.child.wait().await.unwrap().success());
    }
}
