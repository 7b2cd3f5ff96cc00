//! What needs the built binary serving as a process: startup refusals, the Functions host's port
//! variable, the log lines on stdout and stderr, SIGTERM. (The command line is `commands`.)

use std::process::Stdio;

use handler::config::DEFAULT_PORT;
use serde_json::{Value, json};
use tempfile::TempDir;

use crate::handler_process::{HandlerProcess, handler_command, wait_bounded};
use crate::helpers::{
    SECRET, T0, applied, clerk_event, clerk_user, header, key_of, signed, user_changed,
};
use crate::raw_http::{DeliveryInFlight, Framing, parse_response, raw_post};

// ---------------------------------------------------------------------------------------------
// Startup

#[test]
fn bad_configuration_is_refused_in_one_line_naming_the_variable() {
    let kv =
        "@Microsoft.KeyVault(SecretUri=https://kv-clerk.vault.azure.net/secrets/clerk-signing/)";
    let secret_then_bad = format!("{SECRET},whsec_%%%notbase64");
    // An account key is as secret as the signing secret.
    const ACCOUNT_KEY: &str = "QWNjb3VudEtleVNlY3JldA==";
    const ACCOUNT_KEY_ONLY: &str = "AccountKey=QWNjb3VudEtleVNlY3JldA==;";
    const BAD_ENDPOINT: &str = "AccountEndpoint=ftp://acct;AccountKey=QWNjb3VudEtleVNlY3JldA==;";
    // (case, environment, what the one line must name)
    type Case<'a> = (&'a str, Vec<(&'a str, &'a str)>, &'a [&'a str]);
    let cases: Vec<Case> = vec![
        ("no secret", vec![], &["CLERK_WEBHOOK_SIGNING_SECRET"]),
        (
            "empty secret",
            vec![("CLERK_WEBHOOK_SIGNING_SECRET", "")],
            &["CLERK_WEBHOOK_SIGNING_SECRET"],
        ),
        (
            "only separators",
            vec![("CLERK_WEBHOOK_SIGNING_SECRET", " , ")],
            &["CLERK_WEBHOOK_SIGNING_SECRET"],
        ),
        (
            "undecodable secret",
            vec![("CLERK_WEBHOOK_SIGNING_SECRET", "whsec_s3cr3t*value")],
            &["CLERK_WEBHOOK_SIGNING_SECRET"],
        ),
        (
            "a good secret and an undecodable one",
            vec![("CLERK_WEBHOOK_SIGNING_SECRET", &secret_then_bad)],
            &["CLERK_WEBHOOK_SIGNING_SECRET"],
        ),
        (
            "unresolved Key Vault reference",
            vec![("CLERK_WEBHOOK_SIGNING_SECRET", kv)],
            &["CLERK_WEBHOOK_SIGNING_SECRET", "Key Vault"],
        ),
        (
            "unresolved Key Vault reference for Cosmos",
            vec![
                ("CLERK_WEBHOOK_SIGNING_SECRET", SECRET),
                ("COSMOS_ENDPOINT", kv),
            ],
            &["COSMOS_ENDPOINT", "Key Vault"],
        ),
        (
            "in Azure without Cosmos",
            vec![
                ("CLERK_WEBHOOK_SIGNING_SECRET", SECRET),
                ("WEBSITE_INSTANCE_ID", "a1b2c3"),
            ],
            &["COSMOS_ENDPOINT", "WEBSITE_INSTANCE_ID"],
        ),
        (
            "in Azure with Cosmos settings left empty",
            vec![
                ("CLERK_WEBHOOK_SIGNING_SECRET", SECRET),
                ("WEBSITE_INSTANCE_ID", "a1b2c3"),
                ("COSMOS_ENDPOINT", ""),
                ("COSMOS_CONNECTION_STRING", " "),
            ],
            &["COSMOS_ENDPOINT", "WEBSITE_INSTANCE_ID"],
        ),
        (
            "connection string without an endpoint",
            vec![
                ("CLERK_WEBHOOK_SIGNING_SECRET", SECRET),
                ("COSMOS_CONNECTION_STRING", ACCOUNT_KEY_ONLY),
            ],
            &["COSMOS_CONNECTION_STRING"],
        ),
        (
            "connection string with a bad endpoint",
            vec![
                ("CLERK_WEBHOOK_SIGNING_SECRET", SECRET),
                ("COSMOS_CONNECTION_STRING", BAD_ENDPOINT),
            ],
            &["COSMOS_CONNECTION_STRING"],
        ),
        (
            "endpoint and connection string both",
            vec![
                ("CLERK_WEBHOOK_SIGNING_SECRET", SECRET),
                ("COSMOS_ENDPOINT", "https://acct.documents.azure.com:443/"),
                ("COSMOS_CONNECTION_STRING", BAD_ENDPOINT),
            ],
            &["COSMOS_CONNECTION_STRING", "COSMOS_ENDPOINT"],
        ),
        (
            "endpoint without a scheme",
            vec![
                ("CLERK_WEBHOOK_SIGNING_SECRET", SECRET),
                ("COSMOS_ENDPOINT", "acct.documents.azure.com"),
            ],
            &["COSMOS_ENDPOINT"],
        ),
        (
            "unknown log format",
            vec![
                ("CLERK_WEBHOOK_SIGNING_SECRET", SECRET),
                ("LOG_FORMAT", "xml"),
            ],
            &["LOG_FORMAT"],
        ),
    ];
    let numbers = [
        ("TOMBSTONE_TTL_DAYS", ["0", "-3", "thirty", "1e3"]),
        (
            "FUNCTIONS_CUSTOMHANDLER_PORT",
            ["http", "70000", "-1", "7071.5"],
        ),
    ];
    let cases = cases
        .into_iter()
        .chain(numbers.iter().flat_map(|(variable, values)| {
            values.iter().map(move |value| {
                (
                    "bad number",
                    vec![
                        ("CLERK_WEBHOOK_SIGNING_SECRET", SECRET),
                        (*variable, *value),
                    ],
                    std::slice::from_ref(variable),
                )
            })
        }));

    for (case, env, named) in cases {
        let dir = TempDir::new().unwrap();
        let store = dir.path().join("users.sqlite3").display().to_string();
        // Were it accepted, it would serve on a port of its own until killed, and fail the case.
        let mut full: Vec<(String, String)> = vec![
            ("LOCAL_STORE_PATH".into(), store),
            ("FUNCTIONS_CUSTOMHANDLER_PORT".into(), "0".into()),
        ];
        full.extend(env.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        let mut child = handler_command(&full)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let status = wait_bounded(&mut child);
        let output = child.wait_with_output().unwrap();
        let stderr = String::from_utf8(output.stderr).unwrap();
        let case = format!("{case} {env:?}: {stderr}");

        assert!(!status.success(), "{case}");
        assert_eq!(stderr.lines().count(), 1, "{case}");
        for name in named {
            assert!(stderr.contains(name), "{case} does not name {name}");
        }
        for (_, value) in &env {
            if let Some(secret) = value.strip_prefix("whsec_") {
                assert!(!stderr.contains(secret), "{case} echoes the secret");
            }
        }
        for secret in [key_of(SECRET), ACCOUNT_KEY] {
            assert!(!stderr.contains(secret), "{case} echoes a secret");
        }
        assert!(output.stdout.is_empty(), "{case}");
    }
}

/// A port of 127.0.0.1 held by the test for as long as the listener lives: no one else can
/// listen there.
fn held_port() -> (std::net::TcpListener, String) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port().to_string();
    (listener, port)
}

/// Starts `handler <args>` with `env` and asserts that it exits 1 saying it cannot listen on
/// `port`: the port it was told to use.
fn assert_refuses_port(env: &[(&str, &str)], args: &[&str], port: &str) {
    let mut handler = HandlerProcess::spawn(env, args);
    let output = handler.wait();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{env:?} {args:?}: {stderr}");
    assert!(
        stderr.contains(&format!("cannot listen on 127.0.0.1:{port}")),
        "{env:?} {args:?}: {stderr}"
    );
}

#[test]
fn the_host_port_variable_beats_the_port_flag() {
    let (_held, held) = held_port();
    // The variable says port 0, the flag a port held here: had the flag won, the bind would fail
    // and the process exit.
    let mut handler = HandlerProcess::start_blocking(
        &[("FUNCTIONS_CUSTOMHANDLER_PORT", "0")],
        &["--port", &held],
    );
    let port = handler.address.rsplit_once(':').unwrap().1.to_owned();
    assert_ne!(port, held);
    assert_ne!(port, DEFAULT_PORT.to_string());
    handler.terminate();
    assert!(handler.wait().status.success());
    // And the other way round: the variable's port is the one it tries.
    assert_refuses_port(
        &[("FUNCTIONS_CUSTOMHANDLER_PORT", &held)],
        &["--port", "0"],
        &held,
    );

    // Absent, or empty (which counts as absent): the flag decides.
    for (env, command) in [
        (&[][..], &["serve"][..]),
        (&[("FUNCTIONS_CUSTOMHANDLER_PORT", "")][..], &[][..]),
    ] {
        let args = [command, &["--port", "0"]].concat();
        let mut handler = HandlerProcess::spawn(env, &args);
        handler.wait_ready();
        let port = handler.address.rsplit_once(':').unwrap().1.to_owned();
        assert_ne!(port, DEFAULT_PORT.to_string(), "{env:?} {args:?}");
        handler.terminate();
        assert!(handler.wait().status.success());

        let args = [command, &["--port", held.as_str()]].concat();
        assert_refuses_port(env, &args, &held);
    }
}

// ---------------------------------------------------------------------------------------------
// Logs and signals

#[test]
fn delivery_logs_are_json_lines_without_personal_data_or_secrets() {
    let mut handler = HandlerProcess::start_blocking(&[("LOG_FORMAT", "json")], &[]);
    let personal = [
        "Philippa",
        "Quenby-Marsh",
        "pqm.private@example.org",
        "pqm.alt@example.org",
        "+15557654321",
    ];
    let mut user = clerk_user("user_logged", T0);
    user["first_name"] = json!(personal[0]);
    user["last_name"] = json!(personal[1]);
    user["email_addresses"] = json!([
        {"id": "idn_primary", "email_address": personal[2]},
        {"id": "idn_2", "email_address": personal[3]},
    ]);
    user["primary_phone_number_id"] = json!("idn_phone");
    user["phone_numbers"] = json!([{"id": "idn_phone", "phone_number": personal[4]}]);
    let created = clerk_event("user.created", user.clone());
    let (headers, body) = signed(SECRET, &created);
    let response = parse_response(&raw_post(
        &handler.address,
        &headers,
        &body,
        Framing::ContentLength,
    ));
    assert_eq!((response.status, response.body), applied());

    // Refusals log too: a tampered body, and a payload whose error could quote an email.
    let tampered = serde_json::to_vec_pretty(&created).unwrap();
    let response = parse_response(&raw_post(
        &handler.address,
        &headers,
        &tampered,
        Framing::ContentLength,
    ));
    assert_eq!(response.status, 401);
    user["email_addresses"] = json!(personal[2]);
    let (bad_headers, bad_body) = signed(SECRET, &clerk_event("user.updated", user));
    let response = parse_response(&raw_post(
        &handler.address,
        &bad_headers,
        &bad_body,
        Framing::ContentLength,
    ));
    assert_eq!(response.status, 400);

    handler.terminate();
    let output = handler.wait();
    assert!(output.status.success());
    let stdout = String::from_utf8(output.stdout).unwrap();
    let stderr = String::from_utf8(output.stderr).unwrap();

    // Information on stdout, warnings on stderr (where the Functions host gives them their
    // level): every line of both is one JSON object with a level and an event name.
    let parse = |text: &str| -> Vec<Value> {
        text.lines()
            .map(|line| serde_json::from_str(line).unwrap_or_else(|_| panic!("not JSON: {line}")))
            .collect()
    };
    let (lines, warnings) = (parse(&stdout), parse(&stderr));
    for line in lines.iter().chain(&warnings) {
        assert!(
            line["event"].is_string() && line["level"].is_string(),
            "{line}"
        );
    }
    let line = lines
        .iter()
        .find(|line| line["event_id"] == header(&headers, "svix-id"))
        .unwrap_or_else(|| panic!("no line for the delivery in {stdout}"));
    assert_eq!(line["event"], "delivery");
    assert_eq!(line["level"], "INFO");
    assert_eq!(line["event_type"], "user.created");
    assert_eq!(line["kind"], "user");
    assert_eq!(line["item_id"], "user_logged");
    assert_eq!(line["user_id"], "user_logged");
    assert_eq!(line["outcome"], "applied");
    assert_eq!(line["reason"], Value::Null);
    assert_eq!(line["status"], 200);
    assert!(line["latency_ms"].is_f64(), "{line}");
    assert_eq!(line["round_trips"], 2);
    let refused: Vec<_> = warnings
        .iter()
        .filter(|l| l["event"] == "delivery" && l["outcome"] == "refused")
        .map(|l| {
            (
                l["level"].as_str(),
                l["status"].as_u64(),
                l["reason"].as_str(),
            )
        })
        .collect();
    assert_eq!(
        refused,
        [
            (Some("WARN"), Some(401), Some("unauthorized")),
            (Some("WARN"), Some(400), Some("bad_request"))
        ],
        "{stderr}"
    );

    for leak in personal
        .iter()
        .chain(&[key_of(SECRET), "Lovelace", "ada@example.com"])
    {
        assert!(!stdout.contains(leak), "stdout has {leak}: {stdout}");
        assert!(!stderr.contains(leak), "stderr has {leak}: {stderr}");
    }
}

#[test]
fn sigterm_lets_the_delivery_in_flight_finish() {
    let mut handler = HandlerProcess::start_blocking(&[], &[]);
    let (headers, body) = signed(SECRET, &user_changed("user.created", "user_inflight", T0));
    let delivery = DeliveryInFlight::begin(&handler.address, &headers, &body);

    handler.terminate();
    // The listener closes once shutdown has begun; only then does the rest of the body arrive.
    let response = delivery.finish_after_listener_closed(&handler.address);
    assert_eq!((response.status, response.body), applied());

    let output = handler.wait();
    assert!(output.status.success(), "{output:?}");
    assert!(handler.users_get("user_inflight").is_some());
}
