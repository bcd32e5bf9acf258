//! `modelgate dev`, started as a newcomer starts it, serves the README's "try it" example,
//! and keeps its data and admin key across a restart.

use std::io::{BufRead as _, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub(crate) const BIN: &str = env!("CARGO_BIN_EXE_modelgate");

/// The shell block between the README's try-it markers.
fn readme_example() -> String {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).expect("README.md");
    let start = readme.find("<!-- try-it:begin -->").expect("README has a try-it block");
    let end = readme.find("<!-- try-it:end -->").expect("README's try-it block ends");
    let block = &readme[start..end];
    let code_start = block.find("```bash\n").expect("a bash block") + "```bash\n".len();
    let code_end = block[code_start..].find("```").expect("the bash block ends") + code_start;
    block[code_start..code_end].to_owned()
}

pub(crate) fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).expect("a free port")
}

pub(crate) struct Dev {
    child: Child,
    pub(crate) stdout: Vec<String>,
}

impl Dev {
    /// Sends SIGTERM, as a service manager stops it, and waits for it to exit.
    #[cfg(unix)]
    pub(crate) fn terminate(&mut self) -> std::process::ExitStatus {
        let pid = self.child.id().to_string();
        let sent = Command::new("kill").args(["-TERM", &pid]).status().expect("kill runs");
        assert!(sent.success(), "SIGTERM was sent");
        self.child.wait().expect("modelgate exits")
    }
}

impl Drop for Dev {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `modelgate dev` in `dir` with `env` set and waits for the line that says it is serving.
pub(crate) fn start_dev(dir: &std::path::Path, port: u16, env: &[(&str, &str)]) -> Dev {
    let mut child = Command::new(BIN)
        .args(["dev", "--listen", &format!("127.0.0.1:{port}")])
        .current_dir(dir)
        .env("RUST_LOG", "warn")
        .env("MODELGATE__METRICS__LISTEN", "127.0.0.1:0")
        .envs(env.iter().copied())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("modelgate starts");
    let stdout = child.stdout.take().expect("stdout");
    let mut dev = Dev { child, stdout: Vec::new() };
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        if let Ok(line) = rx.recv_timeout(Duration::from_millis(200)) {
            dev.stdout.push(line);
        }
        if dev.stdout.iter().any(|l| l.starts_with("platform-admin key") || l.starts_with("  mg_")) {
            return dev;
        }
    }
    panic!("modelgate dev did not start within 60 s; it printed: {:?}", dev.stdout);
}

#[test]
fn dev_serves_the_readme_example_and_survives_a_restart() {
    let dir = tempfile::tempdir().expect("temporary folder");
    let model_dir = match std::env::var("MODELGATE_TEST_MINILM_DIR") {
        Ok(d) if !d.is_empty() => std::path::PathBuf::from(d),
        _ => {
            let d = dir.path().join("tiny");
            crate::tiny_bert::write(&d);
            d
        }
    };
    let port = free_port();
    let dev = start_dev(dir.path(), port, &[]);
    let printed_key = dev
        .stdout
        .iter()
        .find(|l| l.trim_start().starts_with("mg_"))
        .map(|l| l.trim().to_owned())
        .expect("the admin key is printed");
    let key_file = dir.path().join("modelgate-data/admin.key");
    assert_eq!(std::fs::read_to_string(&key_file).expect("admin.key").trim(), printed_key);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        assert_eq!(std::fs::metadata(&key_file).expect("meta").permissions().mode() & 0o777, 0o600);
    }

    let script = readme_example()
        .replace("http://127.0.0.1:8080", &format!("http://127.0.0.1:{port}"))
        .replace("cargo run --release --", BIN);
    let output = Command::new("bash")
        .args(["-euo", "pipefail", "-c", &format!("{script}\nprintf '\\nKEY=%s\\n' \"$KEY\"")])
        .current_dir(dir.path())
        .env("MODEL_DIR", &model_dir)
        .output()
        .expect("bash runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "the README example failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(stdout.contains("\"object\":\"embedding\""), "the example ends with an embedding: {stdout}");
    let key = stdout.lines().find_map(|l| l.strip_prefix("KEY=")).expect("the example's key").to_owned();
    drop(dev);

    // A restart keeps the data and the key, and prints no new key.
    let dev = start_dev(dir.path(), port, &[]);
    assert!(!dev.stdout.iter().any(|l| l.trim_start().starts_with("mg_")), "no new key on restart: {:?}", dev.stdout);
    assert_eq!(std::fs::read_to_string(&key_file).expect("admin.key").trim(), printed_key);
    let answer = Command::new("curl")
        .args(["-sf", &format!("http://127.0.0.1:{port}/v1/embeddings"), "-H", &format!("Authorization: Bearer {key}")])
        .args(["-H", "Content-Type: application/json", "-d", r#"{"model":"minilm:production","input":"still here"}"#])
        .output()
        .expect("curl runs");
    assert!(
        String::from_utf8_lossy(&answer.stdout).contains("\"object\":\"embedding\""),
        "after a restart the model still answers"
    );
    drop(dev);
}
