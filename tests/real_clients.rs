//! The real Pusher client libraries against the real server (PUSHER.md: real clients decide):
//! pusher-js 8 and Laravel Echo 2 in Node with the `pusher` Node server library, and pysher
//! in Python with the `pusher` Python library — triggers through the HTTP API, and record
//! changes made through the records API. Each installs its packages on first run
//! (npm, pip) into a folder git ignores.

mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde_json::json;
use support::clients::{self, run};
use support::{APP_ID, APP_KEY, APP_SECRET, Server};

const COLLECTIONS: &str = r#"
[[collections]]
name = "posts"
api_rules = { list = "", view = "", create = "", update = "", delete = "" }

[[collections]]
name = "notes"
api_rules = { list = "@request.auth.id != ''" }

[[collections]]
name = "tasks"
api_rules = { list = "@request.auth.id = owner", create = "owner = @request.auth.id" }

# Events of users' subscriptions go sealed on private-encrypted- channels.
[[collections]]
name = "vault"
encrypted = true
api_rules = { list = "@request.auth.id = owner", create = "owner = @request.auth.id" }

# Laravel's `Broadcast::channel('team.{team}', ...)`, declared here instead.
[[channels]]
pattern = "team.{team}"
rule = "team = 'red' && @request.auth.id != 'bob'"
user_info = ["sub"]
"#;

/// Base64 of 32 bytes: the server derives encrypted channels' keys from it, as the Node server
/// library does when it encrypts.
const ENCRYPTION_MASTER_KEY: &str = "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=";

/// The Node client folder, its packages installed on first use.
fn node_clients() -> PathBuf {
    clients::with_npm_packages("node")
}

/// Runs a client script against a fresh server with alice's and bob's tokens.
fn against_server(program: &str, script: &Path, dir: &Path) -> String {
    let server = Server::start_with_env(
        COLLECTIONS,
        300,
        &[("VELO_ENCRYPTION_MASTER_KEY", ENCRYPTION_MASTER_KEY)],
    );
    let alice = server.token("alice", json!({}), Some(3600));
    let bob = server.token("bob", json!({}), Some(3600));
    let output = run(
        Command::new(program)
            .arg(script)
            .current_dir(dir)
            .env("VELO_URL", &server.base)
            .env("APP_ID", APP_ID)
            .env("APP_KEY", APP_KEY)
            .env("APP_SECRET", APP_SECRET)
            .env("ALICE", alice)
            .env("BOB", bob)
            .env("ENCRYPTION_MASTER_KEY", ENCRYPTION_MASTER_KEY),
        script.to_str().unwrap_or_default(),
    );
    println!("{output}");
    output
}

#[test]
fn pusher_js_laravel_echo_and_the_node_server_library() {
    let dir = node_clients();
    let output = against_server("node", &dir.join("test.mjs"), &dir);
    assert_eq!(
        output.matches(": ok").count(),
        11,
        "every scenario reported ok:\n{output}"
    );
}

/// The Node `pusher` library checks every webhook the server sends: the script listens first,
/// then the server starts pointing its webhooks at it.
#[test]
fn every_webhook_is_valid_for_the_node_server_library() {
    use std::io::{BufRead, BufReader, Write};
    let dir = node_clients();
    let mut script = Command::new("node")
        .arg(dir.join("webhooks.mjs"))
        .current_dir(&dir)
        .env("APP_ID", APP_ID)
        .env("APP_KEY", APP_KEY)
        .env("APP_SECRET", APP_SECRET)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("node starts");
    let mut stdout = BufReader::new(script.stdout.take().unwrap());
    let mut listening = String::new();
    stdout.read_line(&mut listening).unwrap();
    let port = listening
        .trim()
        .strip_prefix("listening ")
        .unwrap_or_else(|| panic!("the script says where it listens: {listening:?}"));
    let webhook_url = format!("http://127.0.0.1:{port}/webhooks");
    let server = Server::start_with_env(
        "",
        300,
        &[
            ("VELO_WEBHOOK_URLS", &webhook_url),
            ("VELO_CLIENT_EVENTS", "true"),
        ],
    );
    writeln!(script.stdin.take().unwrap(), "{}", server.base).unwrap();
    let mut output = String::new();
    std::io::Read::read_to_string(&mut stdout, &mut output).unwrap();
    // The script ends itself within 60 s, however it goes.
    let status = script.wait().unwrap();
    println!("{output}");
    assert!(status.success(), "webhooks.mjs failed:\n{output}");
    assert_eq!(output.matches(": ok").count(), 1, "{output}");
}

#[test]
fn pysher_and_the_python_server_library() {
    let dir = clients::with_pip_packages("python");
    let output = against_server("python3", &dir.join("test.py"), &dir);
    assert_eq!(
        output.matches(": ok").count(),
        5,
        "every scenario reported ok:\n{output}"
    );
}

#[test]
fn pusher_js_on_an_external_service_gets_the_pusher_drivers_events() {
    let dir = node_clients();
    // B plays the external service; A delivers through it.
    let key = [("VELO_ENCRYPTION_MASTER_KEY", ENCRYPTION_MASTER_KEY)];
    let b = Server::start_with_env(COLLECTIONS, 300, &key);
    let a = Server::start_delivering_through(&b, COLLECTIONS, 300, &key);
    let alice = a.token("alice", json!({}), Some(3600));
    let output = run(
        Command::new("node")
            .arg(dir.join("driver.mjs"))
            .current_dir(&dir)
            .env("A_URL", &a.base)
            .env("B_URL", &b.base)
            .env("APP_KEY", APP_KEY)
            .env("ALICE", alice),
        "driver.mjs",
    );
    println!("{output}");
    assert_eq!(
        output.matches(": ok").count(),
        3,
        "every scenario reported ok:\n{output}"
    );
}
