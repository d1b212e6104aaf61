//! The console (issue 17) in a real headless Chromium (Debian's `/usr/bin/chromium`, which
//! `.ci/run` installs), driven by playwright-core from `tests/clients/console/console.mjs`:
//! sign-in, the collections form, a rule error marked as it is typed; and Swagger UI's
//! "Try it out" for subscribe. Also, over plain HTTP, the console's assets and headers and
//! `POST /api/expressions/check`.

mod support;

use std::process::Command;
use std::time::Instant;

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use support::clients::{self, run};
use support::{ADMIN, Server};

const COLLECTIONS: &str = r#"
[[collections]]
name = "posts"
api_rules = { list = "", view = "" }
"#;

/// Runs `console.mjs <mode>` against `server`; panics with its output if a step fails. Returns
/// its output, one `<step>: ok after <ms> ms` line per step.
fn drive_chromium(server: &Server, mode: &str) -> String {
    let dir = clients::with_npm_packages("console");
    let started = Instant::now();
    let output = run(
        Command::new("node")
            .arg(dir.join("console.mjs"))
            .arg(mode)
            .current_dir(&dir)
            .env("VELO_URL", &server.base)
            .env("ADMIN", ADMIN),
        "console.mjs",
    );
    println!("{output}console.mjs {mode}: {:?} in all", started.elapsed());
    output
}

async fn check(server: &Server, expression: &str, kind: &str) -> Value {
    let reply = server
        .call(
            Method::POST,
            "/api/expressions/check",
            Some(ADMIN),
            Some(json!({ "expression": expression, "kind": kind })),
        )
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{:?}", reply.body);
    reply.body
}

#[test]
fn the_console_signs_in_creates_a_collection_and_marks_a_rule_error_in_chromium() {
    let server = Server::start(COLLECTIONS);
    let output = drive_chromium(&server, "console");
    assert_eq!(output.matches(": ok after").count(), 8, "{output}");

    let runtime = tokio::runtime::Runtime::new().unwrap();
    let made = runtime.block_on(server.call(
        Method::GET,
        "/api/collections/console_made",
        Some(ADMIN),
        None,
    ));
    assert_eq!(made.status, StatusCode::OK, "{:?}", made.body);
    assert_eq!(
        made.body["data"]["api_rules"],
        json!({
            "list": "",
            "view": "",
            "create": "@request.auth.id != ''",
            "update": "@request.auth.id = author",
            "delete": null,
        })
    );
}

#[test]
fn swagger_ui_try_it_out_subscribes_with_the_prefilled_example_in_chromium() {
    let server = Server::start(COLLECTIONS);
    let output = drive_chromium(&server, "swagger");
    assert_eq!(output.matches(": ok after").count(), 2, "{output}");
}

#[tokio::test]
async fn the_console_assets_are_embedded_and_served_under_a_strict_csp() {
    let server = Server::start(COLLECTIONS);
    for (path, content_type) in [
        ("/console", "text/html"),
        ("/console/app.js", "text/javascript"),
        ("/console/app.css", "text/css"),
    ] {
        let response = server.request(Method::GET, path).send().await.unwrap();
        assert_eq!(response.status(), StatusCode::OK, "{path}");
        let headers = response.headers();
        assert_eq!(
            headers["content-security-policy"], "default-src 'self'",
            "{path}"
        );
        assert!(
            headers["content-type"]
                .to_str()
                .unwrap()
                .starts_with(content_type),
            "{path}: {:?}",
            headers["content-type"]
        );
        let body = response.text().await.unwrap();
        assert!(!body.is_empty(), "{path}");
        if path == "/console" {
            // Nothing inline and nothing from elsewhere: the CSP would refuse it.
            assert!(!body.contains("<style"), "inline style");
            assert!(!body.contains("style="), "inline style attribute");
            assert!(
                !body.contains("<script>") && !body.contains("onclick"),
                "inline script"
            );
            assert!(!body.contains("http://") && !body.contains("https://"));
        }
    }
}

#[tokio::test]
async fn expressions_are_checked_by_the_servers_parser_with_the_position_of_an_error() {
    let server = Server::start(COLLECTIONS);
    assert_eq!(
        check(&server, "status = 'a' && author = @request.auth.id", "rule").await,
        json!({ "valid": true })
    );
    assert_eq!(
        check(&server, "SUPERUSER_ONLY", "rule").await,
        json!({ "valid": true })
    );
    assert_eq!(check(&server, "", "filter").await, json!({ "valid": true }));

    // What a subscribe with this filter answers, and where.
    let verdict = check(&server, "status = ", "filter").await;
    assert_eq!(verdict["valid"], false);
    assert_eq!(verdict["position"], 10);
    let subscribe = server.subscribe(None, "posts", Some("status = ")).await;
    assert_eq!(subscribe.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(verdict["message"], subscribe.body["message"]);

    // `SUPERUSER_ONLY` is a whole rule, never part of a filter.
    let verdict = check(&server, "SUPERUSER_ONLY", "filter").await;
    assert_eq!(
        (verdict["valid"].clone(), verdict["position"].clone()),
        (json!(false), json!(1))
    );

    // Positions count characters, not bytes.
    let verdict = check(&server, "titre = 'été' ) ", "filter").await;
    assert_eq!(verdict["position"], 15, "{verdict}");
    assert_eq!(verdict["found"], "`)`", "{verdict}");
}

#[tokio::test]
async fn checking_an_expression_is_for_the_admin_with_a_well_formed_body() {
    let server = Server::start(COLLECTIONS);
    let body = json!({ "expression": "a = 1", "kind": "filter" });
    let path = "/api/expressions/check";
    let guest = server
        .call(Method::POST, path, None, Some(body.clone()))
        .await;
    assert_eq!(guest.status, StatusCode::UNAUTHORIZED);
    let user = server.token("alice", json!({}), Some(3600));
    let user = server
        .call(Method::POST, path, Some(&user), Some(body.clone()))
        .await;
    assert_eq!(user.status, StatusCode::FORBIDDEN);
    for wrong in [
        json!({ "expression": "a = 1", "kind": "query" }),
        json!({ "expression": "a = 1" }),
        json!({ "expression": "a = 1", "kind": "filter", "knd": "rule" }),
    ] {
        let reply = server
            .call(Method::POST, path, Some(ADMIN), Some(wrong.clone()))
            .await;
        assert_eq!(
            reply.status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{wrong}: {:?}",
            reply.body
        );
    }
}
