//! Postgres restarted under load (a private server of this test's, from
//! `MODELGATE_TEST_POSTGRES_BIN`: the shared one must not stop under other tests): while it is
//! down, requests that need it answer 503, never 500; the pool comes back by itself.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use reqwest::Method;
use serde_json::json;

use crate::helpers::{AppOptions, Database, TestApp, service_var};

struct PrivatePostgres {
    bin: PathBuf,
    dir: tempfile::TempDir,
    port: u16,
}

impl PrivatePostgres {
    /// Runs a Postgres tool, as the `postgres` user when this test runs as root (Postgres
    /// refuses to run as root).
    fn run(&self, tool: &str, args: &[&str]) {
        let tool = self.bin.join(tool);
        let root = Command::new("id").arg("-u").output().is_ok_and(|o| o.stdout.starts_with(b"0\n"));
        let status = if root {
            Command::new("runuser").args(["-u", "postgres", "--"]).arg(&tool).args(args).status()
        } else {
            Command::new(&tool).args(args).status()
        };
        assert!(status.is_ok_and(|s| s.success()), "{} {args:?} failed", tool.display());
    }

    fn data(&self) -> String {
        self.dir.path().join("data").display().to_string()
    }

    fn start_server(&self) {
        let options =
            format!("-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off", self.port, self.dir.path().display());
        let log = self.dir.path().join("postgres.log").display().to_string();
        self.run("pg_ctl", &["-D", &self.data(), "-o", &options, "-l", &log, "-w", "start"]);
    }

    fn stop_server(&self) {
        self.run("pg_ctl", &["-D", &self.data(), "-m", "fast", "-w", "stop"]);
    }

    fn start(bin: &str) -> PrivatePostgres {
        let dir = tempfile::tempdir().expect("a folder");
        let port = std::net::TcpListener::bind("127.0.0.1:0").expect("a port").local_addr().expect("addr").port();
        let pg = PrivatePostgres { bin: Path::new(bin).to_path_buf(), dir, port };
        let _ = Command::new("chown").args(["-R", "postgres:postgres"]).arg(pg.dir.path()).status();
        pg.run("initdb", &["-D", &pg.data(), "-A", "trust", "-U", "postgres", "--no-sync"]);
        pg.start_server();
        pg
    }

    fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }
}

impl Drop for PrivatePostgres {
    fn drop(&mut self) {
        let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.stop_server()));
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_postgres_restart_under_load_answers_503_and_the_pool_recovers() {
    let Some(bin) = service_var("MODELGATE_TEST_POSTGRES_BIN", "Postgres restarted under load") else { return };
    let pg = PrivatePostgres::start(&bin);
    let app = Arc::new(TestApp::spawn(AppOptions::new(Database::Postgres(pg.url()))).await);
    let (key, _) = app.acme_with_tiny_model().await;
    assert_eq!(app.embed(&key, "tiny", json!("warm")).await.0, 200);

    // Four clients: a management read (always the database) and an embedding (cached auth
    // and resolution, until their caches expire), over and over.
    let stop = Arc::new(AtomicBool::new(false));
    let seen = Arc::new(Mutex::new(HashMap::<(bool, u16), u32>::new()));
    let clients: Vec<_> = (0..4)
        .map(|_| {
            let (app, key, stop, seen) = (app.clone(), key.clone(), stop.clone(), seen.clone());
            tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    let read = app.call(Method::GET, "/api/v1/tenants/acme/models", &key, None).await.0;
                    let embed = app.embed(&key, "tiny", json!("under load")).await.0;
                    let mut seen = seen.lock().expect("counts");
                    *seen.entry((true, read)).or_default() += 1;
                    *seen.entry((false, embed)).or_default() += 1;
                }
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_secs(1)).await;
    pg.stop_server();
    // Longer than the pool's 5 s acquire timeout, so that waiting requests give up with 503.
    tokio::time::sleep(Duration::from_secs(7)).await;
    pg.start_server();

    // The pool reconnects on its own: reads succeed again within seconds, no restart.
    let deadline = Instant::now() + Duration::from_secs(20);
    while app.call(Method::GET, "/api/v1/tenants/acme/models", &key, None).await.0 != 200 {
        assert!(Instant::now() < deadline, "the database did not come back");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    stop.store(true, Ordering::Relaxed);
    for client in clients {
        client.await.expect("a client");
    }
    let seen = seen.lock().expect("counts").clone();
    let unexpected: Vec<_> = seen.iter().filter(|((_, status), _)| !matches!(status, 200 | 503)).collect();
    assert!(unexpected.is_empty(), "only 200 and 503 (read?, status) -> count: {seen:?}");
    assert!(seen.get(&(true, 503)).is_some_and(|n| *n > 0), "reads failed with 503 while it was down: {seen:?}");
    let (status, _) = app.call(Method::GET, "/api/v1/tenants/acme/models", &key, None).await;
    assert_eq!(status, 200);
}
