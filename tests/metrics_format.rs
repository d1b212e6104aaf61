//! `/metrics` is valid Prometheus text, as Prometheus's own `promtool check metrics` reads it
//! (Debian's `prometheus` package, installed when missing, as the other tests install theirs),
//! with every kind of line present: counters, labelled counters, gauges and the histogram; and
//! `GET /metrics` is an operation of the OpenAPI document, answered with the encoder's
//! `Content-Type` and no token.

mod support;

use std::io::Write;
use std::process::{Command, Stdio};

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use support::{ADMIN, Server};

/// `promtool`, installed with Debian's `prometheus` package when the machine has none.
fn promtool() -> Command {
    let present = Command::new("promtool")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|status| status.success());
    if !present {
        eprintln!("promtool is missing: installing the Debian package prometheus");
        let installed = Command::new("apt-get")
            .args(["install", "-y", "-q", "prometheus"])
            .env("DEBIAN_FRONTEND", "noninteractive")
            .status()
            .is_ok_and(|status| status.success());
        assert!(
            installed,
            "this test needs promtool: `apt-get install prometheus` (it could not be installed here)"
        );
    }
    Command::new("promtool")
}

#[tokio::test]
async fn metrics_pass_promtool() {
    let server = Server::start(
        r#"
[[collections]]
name = "posts"
api_rules = { list = "", view = "", create = "", update = "", delete = "" }
"#,
    );
    // Something in every family: a subscription, a matched write.
    let subscribed = server.subscribe(None, "posts", None).await;
    assert_eq!(subscribed.status, StatusCode::OK);
    let written = server
        .call(
            Method::POST,
            "/api/collections/posts/records",
            Some(ADMIN),
            Some(json!({"title": "x"})),
        )
        .await;
    assert_eq!(written.status, StatusCode::CREATED);
    let text = server.metrics().await;
    for family in [
        "velo_subscriptions{collection=\"posts\"} 1",
        "# TYPE velo_match_seconds histogram",
        "velo_limited_total{limit=\"subscribe_rate\"}",
    ] {
        assert!(text.contains(family), "{family} in\n{text}");
    }
    let mut check = promtool()
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool runs");
    check
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let output = check.wait_with_output().unwrap();
    assert!(
        output.status.success(),
        "promtool check metrics: {}{}\n{text}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

#[tokio::test]
async fn metrics_are_documented_and_served_as_prometheus_text_without_a_token() {
    let server = Server::start("");
    let document = server.call(Method::GET, "/openapi.json", None, None).await;
    let operation = &document.body["paths"]["/metrics"]["get"];
    assert_eq!(operation["operationId"], "getMetrics", "{operation}");
    assert_eq!(operation["security"], json!([]), "no credentials");
    let content = operation["responses"]["200"]["content"]
        .as_object()
        .expect("a 200 with content");
    assert_eq!(
        content.keys().collect::<Vec<_>>(),
        ["text/plain; version=0.0.4; charset=utf-8"]
    );
    assert_eq!(
        velo_realtime::metrics::CONTENT_TYPE,
        "text/plain; version=0.0.4; charset=utf-8"
    );
    let example = content[velo_realtime::metrics::CONTENT_TYPE]["schema"]["example"].clone();
    assert!(
        matches!(&example, Value::String(text) if text.contains("velo_deliveries_total 0")),
        "{example}"
    );

    let response = server
        .request(Method::GET, "/metrics")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        response.headers()["content-type"],
        velo_realtime::metrics::CONTENT_TYPE
    );
    assert!(
        response
            .text()
            .await
            .unwrap()
            .lines()
            .any(|line| line == "velo_connections 0")
    );
    // Only GET: the `Allow` header is read from the document.
    let post = server
        .request(Method::POST, "/metrics")
        .send()
        .await
        .unwrap();
    assert_eq!(post.status(), StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(post.headers()["allow"], "GET");
}
