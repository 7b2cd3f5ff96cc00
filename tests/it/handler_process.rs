//! The built `handler` binary, started the way the Functions host starts a custom handler: with
//! `FUNCTIONS_CUSTOMHANDLER_PORT` set, `GET /` polled until it answers. For what needs a real
//! process: its environment, signals, what it prints, its exit status, the command line.
//!
//! It is told port 0 and binds a port of its own; the test learns which from the `listening` line
//! it logs (so `RUST_LOG` must let that info line through), and no port is picked by the test
//! and released in the hope that it stays free.

use std::io::Read;
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde_json::Value;
use tempfile::TempDir;

use crate::fixtures::SECRET;
use crate::raw_http::{PATIENCE, get_root};

pub struct HandlerProcess {
    child: Child,
    /// `127.0.0.1:<port>`, once `GET /` has answered there.
    pub address: String,
    pub base_url: String,
    env: Vec<(String, String)>,
    stdout: Captured,
    stderr: Captured,
    _dir: TempDir,
}

impl HandlerProcess {
    /// Starts on a fresh local store with the test secret, port 0 and `extra` environment, and
    /// returns once `GET /` answers.
    pub async fn start(extra: &[(&str, &str)]) -> Self {
        let mut process = Self::spawn(&with_port_0(extra), &[]);
        let deadline = Instant::now() + PATIENCE;
        while !process.poll_ready(deadline) {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        process
    }

    /// `handler <args>` like `start`, for a plain `#[test]`.
    pub fn start_blocking(extra: &[(&str, &str)], args: &[&str]) -> Self {
        let mut process = Self::spawn(&with_port_0(extra), args);
        process.wait_ready();
        process
    }

    /// `handler <args>` on a fresh local store with the test secret and exactly `extra` beside
    /// it (no port unless `extra` or `args` give one); it may be ready, or refuse to start.
    pub fn spawn(extra: &[(&str, &str)], args: &[&str]) -> Self {
        let dir = TempDir::new().unwrap();
        let store_path = dir.path().join("users.sqlite3");
        let mut env: Vec<(String, String)> = vec![
            ("CLERK_WEBHOOK_SIGNING_SECRET".into(), SECRET.into()),
            ("LOCAL_STORE_PATH".into(), store_path.display().to_string()),
        ];
        env.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        let mut child = handler_command(&env)
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stdout = Captured::drain(child.stdout.take().unwrap());
        let stderr = Captured::drain(child.stderr.take().unwrap());
        Self {
            child,
            address: String::new(),
            base_url: String::new(),
            env,
            stdout,
            stderr,
            _dir: dir,
        }
    }

    /// Blocks until `GET /` answers on the address the process said it listens on.
    pub fn wait_ready(&mut self) {
        let deadline = Instant::now() + PATIENCE;
        while !self.poll_ready(deadline) {
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// One look: has it said where it listens, and does `GET /` answer there?
    fn poll_ready(&mut self, deadline: Instant) -> bool {
        if let Some(status) = self.child.try_wait().unwrap() {
            panic!(
                "handler exited {status} before answering GET /: {}",
                String::from_utf8_lossy(&self.stderr.finish())
            );
        }
        assert!(
            Instant::now() < deadline,
            "GET / never answered; stdout: {}",
            self.stdout.text()
        );
        if self.address.is_empty() {
            let Some(address) = listening_address(&self.stdout.text()) else {
                return false;
            };
            self.base_url = format!("http://{address}");
            self.address = address;
        }
        match get_root(&self.address) {
            Some(response) => {
                assert_eq!(response.status, 200);
                true
            }
            None => false,
        }
    }

    pub fn terminate(&self) {
        let pid = libc::pid_t::try_from(self.child.id()).unwrap();
        // SAFETY: kill(2) touches no memory; the pid is our child, not yet waited for, so it
        // cannot have been reused by another process.
        assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0);
    }

    /// Waits (bounded) for the process to exit and returns everything it printed.
    pub fn wait(&mut self) -> Output {
        let status = wait_bounded(&mut self.child);
        Output {
            status,
            stdout: self.stdout.finish(),
            stderr: self.stderr.finish(),
        }
    }

    /// The value the process was started with for `name`.
    pub fn env_value(&self, name: &str) -> Option<String> {
        env_value(&self.env, name)
    }

    /// `handler users get <id>` on the same store: the document, or `None` when it exits 1 with
    /// nothing on stdout.
    pub fn users_get(&self, id: &str) -> Option<Value> {
        cli_get(&self.env, "users", id)
    }
}

impl Drop for HandlerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn with_port_0<'a>(extra: &[(&'a str, &'a str)]) -> Vec<(&'a str, &'a str)> {
    [&[("FUNCTIONS_CUSTOMHANDLER_PORT", "0")], extra].concat()
}

/// The address in the `listening` line the handler logs once bound, in either log format. Only
/// whole lines count: the last one may still be arriving.
fn listening_address(stdout: &str) -> Option<String> {
    let (complete, _) = stdout.rsplit_once('\n')?;
    let line = complete.lines().find(|line| line.contains("listening"))?;
    let start = line.find("127.0.0.1:")?;
    let port: String = line[start + "127.0.0.1:".len()..]
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    Some(format!("127.0.0.1:{port}"))
}

/// One output stream of the child, read as it comes so that the child never blocks on a full
/// pipe.
struct Captured {
    bytes: Arc<Mutex<Vec<u8>>>,
    reader: Option<JoinHandle<()>>,
}

impl Captured {
    fn drain(mut stream: impl Read + Send + 'static) -> Self {
        let bytes = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&bytes);
        let reader = std::thread::spawn(move || {
            let mut buffer = [0; 8192];
            while let Ok(n @ 1..) = stream.read(&mut buffer) {
                sink.lock().unwrap().extend_from_slice(&buffer[..n]);
            }
        });
        Self {
            bytes,
            reader: Some(reader),
        }
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.bytes.lock().unwrap()).into_owned()
    }

    /// Everything, once the stream has closed (the child has exited).
    fn finish(&mut self) -> Vec<u8> {
        if let Some(reader) = self.reader.take() {
            reader.join().unwrap();
        }
        self.bytes.lock().unwrap().clone()
    }
}

pub fn wait_bounded(child: &mut Child) -> ExitStatus {
    let deadline = Instant::now() + PATIENCE;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("handler did not exit within {PATIENCE:?}");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// The binary with exactly `env` (plus PATH), nothing inherited that could pick another store.
pub fn handler_command(env: &[(String, String)]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_handler"));
    command.env_clear();
    if let Ok(path) = std::env::var("PATH") {
        command.env("PATH", path);
    }
    command.envs(env.iter().map(|(k, v)| (k, v)));
    command
}

pub fn env_value(env: &[(String, String)], name: &str) -> Option<String> {
    env.iter()
        .rev()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.clone())
}

/// `handler <noun> get <id>` with `env`: the document, or `None` when it exits 1 with nothing on
/// stdout.
pub fn cli_get(env: &[(String, String)], noun: &str, id: &str) -> Option<Value> {
    let output = handler_command(env)
        .args([noun, "get", id])
        .output()
        .unwrap();
    match output.status.code() {
        Some(0) => Some(serde_json::from_slice(&output.stdout).unwrap()),
        Some(1) => {
            assert!(
                output.stdout.is_empty(),
                "a missing item prints nothing on stdout"
            );
            None
        }
        other => panic!(
            "{noun} get exited {other:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        ),
    }
}

/// A listing command with `env`: one document per line.
pub fn cli_list(env: &[(String, String)], args: &[&str]) -> Vec<Value> {
    let output = handler_command(env).args(args).output().unwrap();
    assert!(
        output.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout)
        .unwrap()
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect()
}
