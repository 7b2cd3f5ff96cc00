//! A double of the Azure Functions host as far as telemetry goes: it starts the built handler the
//! way the host starts a custom handler, forwards HTTP requests and invokes the timer, and records
//! what Application Insights would then hold, in its classic tables' shapes:
//!
//! - `requests`: one row per invocation, as the host's `ApplicationInsightsLogger` writes it:
//!   `name` the function, `resultCode` the status the handler answered for an HTTP function
//!   (`success` stays true whatever it is) and `"0"` for the timer (`success` false when the
//!   handler answered non-2xx).
//! - `traces`: every line the handler printed, category `Host.Function.Console`: stdout lines at
//!   Information, stderr lines at Warning when they contain "warn" (any case), else at Error
//!   (`WorkerProcess.cs`, `ParseErrorMessageAndLog`); and each entry of a 2xx timer answer's
//!   `Logs` at Information under `Function.<name>.User` (a non-2xx answer's are dropped).
//!
//! The facts and their sources are in docs/telemetry.md.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use serde_json::{Value, json};
use tempfile::TempDir;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::handler_process::HandlerProcess;

pub struct FunctionsHost {
    process: HandlerProcess,
    base_url: String,
    store_path: PathBuf,
    requests: Mutex<Vec<Value>>,
    logs: Mutex<Vec<Value>>,
    next_invocation: AtomicU64,
}

/// What the handler answered.
pub struct Answer {
    pub status: u16,
    pub body: Value,
}

impl FunctionsHost {
    /// Starts the handler (`HandlerProcess`: the test signing secret, a fresh local store, the
    /// port it picks itself) with JSON lines, the default in Azure, and `env`.
    pub async fn start(env: &[(&str, String)]) -> Self {
        let mut extra = vec![("LOG_FORMAT", "json")];
        extra.extend(env.iter().map(|(k, v)| (*k, v.as_str())));
        let process = HandlerProcess::start(&extra).await;
        Self {
            base_url: process.base_url.clone(),
            store_path: process.env_value("LOCAL_STORE_PATH").unwrap().into(),
            process,
            requests: Mutex::new(Vec::new()),
            logs: Mutex::new(Vec::new()),
            next_invocation: AtomicU64::new(1),
        }
    }

    pub fn store_path(&self) -> &Path {
        &self.store_path
    }

    fn invocation_id(&self) -> String {
        let n = self.next_invocation.fetch_add(1, Ordering::Relaxed);
        format!("00000000-0000-4000-8000-{n:012}")
    }

    /// An HTTP function's request, forwarded as the host forwards it (`enableForwardingHttpRequest`:
    /// same path, headers and body), recorded as its `requests` row.
    pub async fn http(
        &self,
        function: &str,
        path: &str,
        headers: &[(String, String)],
        body: Vec<u8>,
    ) -> Answer {
        let invocation = self.invocation_id();
        let mut request = reqwest::Client::new()
            .post(format!("{}{path}", self.base_url))
            .header("X-Azure-Functions-InvocationId", &invocation)
            .body(body);
        for (name, value) in headers {
            request = request.header(name, value);
        }
        let started = (OffsetDateTime::now_utc(), Instant::now());
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        let body = response.json().await.unwrap_or(Value::Null);
        self.record(function, &invocation, started, status.to_string(), true);
        Answer { status, body }
    }

    /// A timer invocation: the host's JSON envelope posted to `/<function>`; the answer's `Logs`
    /// are recorded under the invocation when it is 2xx.
    pub async fn timer(&self, function: &str) -> Answer {
        let invocation = self.invocation_id();
        let now = OffsetDateTime::now_utc().format(&Rfc3339).unwrap();
        let envelope = json!({
            "Data": {"timer": {"Schedule": {"AdjustForDST": true}, "ScheduleStatus": null, "IsPastDue": false}},
            "Metadata": {"sys": {"MethodName": function, "UtcNow": now, "RandGuid": invocation}},
        });
        let started = (OffsetDateTime::now_utc(), Instant::now());
        let response = reqwest::Client::new()
            .post(format!("{}/{function}", self.base_url))
            .header("X-Azure-Functions-InvocationId", &invocation)
            .json(&envelope)
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        let body: Value = response.json().await.unwrap_or(Value::Null);
        let success = (200..300).contains(&status);
        if success {
            let category = format!("Function.{function}.User");
            for entry in body["Logs"].as_array().into_iter().flatten() {
                self.logs.lock().unwrap().push(json!({
                    "timestamp": timestamp(OffsetDateTime::now_utc()),
                    "message": entry,
                    "severityLevel": 1,
                    "itemType": "trace",
                    "operation_Id": invocation.replace('-', ""),
                    "operation_Name": function,
                    "customDimensions": {"Category": category, "LogLevel": "Information", "InvocationId": invocation},
                }));
            }
        }
        self.record(function, &invocation, started, "0".into(), success);
        Answer { status, body }
    }

    fn record(
        &self,
        function: &str,
        invocation: &str,
        (at, started): (OffsetDateTime, Instant),
        result_code: String,
        success: bool,
    ) {
        self.requests.lock().unwrap().push(json!({
            "timestamp": timestamp(at),
            "id": &invocation.replace('-', "")[..16],
            "name": function,
            "url": format!("{}/{function}", self.base_url),
            "resultCode": result_code,
            "success": success,
            "duration": started.elapsed().as_secs_f64() * 1000.0,
            "itemType": "request",
            "operation_Id": invocation.replace('-', ""),
            "operation_Name": function,
            "customDimensions": {"Category": "Host.Results", "LogLevel": "Information", "InvocationId": invocation, "FullName": format!("Functions.{function}")},
        }));
    }

    /// Stops the handler as the host does (SIGTERM), and returns what Application Insights holds.
    pub fn stop(mut self) -> Telemetry {
        self.process.terminate();
        let output = self.process.wait();
        assert!(
            output.status.success(),
            "the handler exited {}",
            output.status
        );
        let printed = [(output.stdout, false), (output.stderr, true)];
        let mut traces: Vec<Value> = printed
            .iter()
            .flat_map(|(bytes, stderr)| {
                String::from_utf8_lossy(bytes)
                    .lines()
                    .map(|line| console_trace(line, *stderr))
                    .collect::<Vec<_>>()
            })
            .collect();
        traces.append(&mut self.logs.lock().unwrap());
        Telemetry {
            traces,
            requests: std::mem::take(&mut self.requests.lock().unwrap()),
        }
    }
}

/// A console line as a `traces` row: the host's level rule for a custom handler, at the time the
/// line says it was written (the host stamps it as it reads it, within microseconds of that).
fn console_trace(line: &str, stderr: bool) -> Value {
    let (severity, level) = match (stderr, line.to_lowercase().contains("warn")) {
        (false, _) => (1, "Information"),
        (true, true) => (2, "Warning"),
        (true, false) => (3, "Error"),
    };
    let written = serde_json::from_str::<Value>(line)
        .ok()
        .and_then(|line| line["timestamp"].as_str().map(str::to_owned))
        .unwrap_or_else(|| timestamp(OffsetDateTime::now_utc()));
    json!({
        "timestamp": written,
        "message": line.trim(),
        "severityLevel": severity,
        "itemType": "trace",
        "customDimensions": {"Category": "Host.Function.Console", "LogLevel": level, "prop__{OriginalFormat}": line.trim()},
    })
}

fn timestamp(at: OffsetDateTime) -> String {
    at.format(&Rfc3339).unwrap()
}

/// What Application Insights holds after a run.
pub struct Telemetry {
    pub traces: Vec<Value>,
    pub requests: Vec<Value>,
}

impl Telemetry {
    /// The first console trace of the handler's `event`, if it printed one.
    pub fn console_line(&self, event: &str) -> Option<&Value> {
        let name = format!(r#""event":"{event}""#);
        self.traces.iter().find(|trace| {
            trace["customDimensions"]["Category"] == "Host.Function.Console"
                && trace["message"].as_str().is_some_and(|m| m.contains(&name))
        })
    }

    /// The rows `infra/queries/<query>.kql` returns over this telemetry, run unchanged by
    /// duckdb-kql (tests/kql/run_query.py) in the Python environment `scripts/test` prepares.
    pub fn query(&self, query: &str) -> Vec<Value> {
        self.query_with(query, &[])
    }

    /// `query` with some of its `let` defaults set (`name`, KQL literal), as Bicep or a person
    /// would set them.
    pub fn query_with(&self, query: &str, defaults: &[(&str, &str)]) -> Vec<Value> {
        let dir = TempDir::new().unwrap();
        for (table, rows) in [("traces", &self.traces), ("requests", &self.requests)] {
            let lines: Vec<String> = rows.iter().map(Value::to_string).collect();
            std::fs::write(dir.path().join(format!("{table}.jsonl")), lines.join("\n")).unwrap();
        }
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let python = std::env::var_os("KQL_PYTHON")
            .map(PathBuf::from)
            .unwrap_or_else(|| root.join(".venv/bin/python"));
        assert!(
            python.exists(),
            "{} is missing: run scripts/test, which installs tests/kql/requirements.txt into .venv \
             (or set KQL_PYTHON to a Python that has them)",
            python.display()
        );
        let mut command = Command::new(&python);
        command
            .arg(root.join("tests/kql/run_query.py"))
            .arg(dir.path())
            .arg(root.join(format!("infra/queries/{query}.kql")));
        for (name, value) in defaults {
            command.arg("--set").arg(format!("{name}={value}"));
        }
        let output = command.output().unwrap();
        let mut stderr = String::new();
        output
            .stderr
            .as_slice()
            .read_to_string(&mut stderr)
            .unwrap();
        assert!(output.status.success(), "{query}: {stderr}");
        serde_json::from_slice(&output.stdout).unwrap()
    }
}
