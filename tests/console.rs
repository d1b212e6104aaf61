//! The console (issue 17) in a real headless Chromium (Debian's `/usr/bin/chromium`, installed
//! with `apt-get` when it is missing), driven by playwright-core from `tests/clients/console/console.mjs`:
//! sign-in, the collections form, a rule error marked as it is typed, the tail, the "Send"
//! panel's record and Pusher event forms; and Swagger UI's "Try it out" for subscribe. Also,
//! over plain HTTP and WebSockets, the console's assets and headers, `POST
//! /api/expressions/check`, the tail, the overview and `POST /api/console/events`.

mod support;

use std::process::Command;
use std::time::Instant;

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use support::clients::{self, run};
use support::{ADMIN, APP_ID, APP_KEY, APP_SECRET, Server, ws};
use velo_realtime::pusher::signature::AppCredentials;

const COLLECTIONS: &str = r#"
[[collections]]
name = "posts"
api_rules = { list = "", view = "", create = "" }
"#;

/// Installs the Debian packages `chromium` (the browser) and `curl` (a write is made with it)
/// when they are missing (once per test binary).
fn ensure_chromium() {
    static INSTALLED: std::sync::Once = std::sync::Once::new();
    INSTALLED.call_once(|| {
        let present = |program: &str| {
            Command::new(program)
                .arg("--version")
                .stdout(std::process::Stdio::null())
                .status()
                .is_ok_and(|status| status.success())
        };
        let missing: Vec<&str> = ["chromium", "curl"]
            .into_iter()
            .filter(|program| !present(program))
            .collect();
        if missing.is_empty() {
            return;
        }
        eprintln!("missing: installing the Debian packages {missing:?}");
        let apt = |args: &[&str]| {
            Command::new("apt-get")
                .args(args)
                .env("DEBIAN_FRONTEND", "noninteractive")
                .status()
                .is_ok_and(|status| status.success())
        };
        let install = [&["install", "-y", "-q"][..], &missing].concat();
        assert!(
            apt(&["update", "-qq"]) && apt(&install),
            "the console tests need {missing:?}: `apt-get install {}` (it could not be done here)",
            missing.join(" ")
        );
    });
}

/// Runs `console.mjs <mode>` against `server`; panics with its output if a step fails. Returns
/// its output, one `<step>: ok after <ms> ms` line per step.
fn drive_chromium(server: &Server, mode: &str) -> String {
    ensure_chromium();
    let dir = clients::with_npm_packages("console");
    let started = Instant::now();
    let output = run(
        Command::new("node")
            .arg(dir.join("console.mjs"))
            .arg(mode)
            .current_dir(&dir)
            .env("VELO_URL", &server.base)
            .env("ADMIN", ADMIN)
            .env("APP_ID", APP_ID)
            .env("APP_KEY", APP_KEY)
            .env("APP_SECRET", APP_SECRET),
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
fn the_console_signs_in_edits_collections_marks_a_rule_error_tails_and_sends_events_in_chromium() {
    let server = Server::start(COLLECTIONS);
    let output = drive_chromium(&server, "console");
    assert_eq!(output.matches(": ok after").count(), 28, "{output}");

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
        ("/console/charts.js", "text/javascript"),
        ("/console/send.js", "text/javascript"),
        ("/console/app.css", "text/css"),
        ("/console/playground.js", "text/javascript"),
        ("/console/dom.js", "text/javascript"),
        ("/console/favicon.svg", "image/svg+xml"),
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

async fn evaluate(server: &Server, body: Value) -> Value {
    let reply = server
        .call(
            Method::POST,
            "/api/expressions/evaluate",
            Some(ADMIN),
            Some(body.clone()),
        )
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{body}: {:?}", reply.body);
    reply.body
}

#[tokio::test]
async fn the_playground_says_how_each_side_and_the_index_decided() {
    let server = Server::start(COLLECTIONS);
    let published = json!({ "status": "published", "author": "u1", "views": 11 });
    let draft = json!({ "status": "draft", "author": "u1", "views": 3 });

    // An equality is a bucket of the index: a record under its key matches with no script run,
    // one under another key is never visited.
    let body =
        |record: &Value| json!({ "filter": "status = 'published'", "rule": "", "record": record });
    let hit = evaluate(&server, body(&published)).await;
    assert_eq!(hit["matches"], true, "{hit}");
    assert_eq!(
        hit["index"],
        json!({ "placement": "bucket", "field": "status", "keys": ["\"published\""], "candidate": true, "decided_by": "index" })
    );
    assert_eq!(
        hit["rule"],
        json!({ "expression": "", "holds": true, "decided_by": "empty", "parts": [] })
    );
    let miss = evaluate(&server, body(&draft)).await;
    assert_eq!(miss["matches"], false, "{miss}");
    assert_eq!(
        (&miss["index"]["candidate"], &miss["index"]["decided_by"]),
        (&json!(false), &json!("index"))
    );
    assert_eq!(miss["filter"]["decided_by"], "record");

    // The rest of the condition runs as the compiled script, and each part says how it went.
    for (record, matches) in [(&published, true), (&draft, false)] {
        let verdict = evaluate(
            &server,
            json!({
                "filter": "views > 10 && status = 'published'",
                "rule": "author = @request.auth.id",
                "record": record,
                "auth": { "sub": "u1" },
            }),
        )
        .await;
        assert_eq!(verdict["matches"], matches, "{verdict}");
        assert_eq!(verdict["index"]["field"], "author", "{verdict}");
        assert_eq!(verdict["index"]["decided_by"], "rhai", "{verdict}");
        assert_eq!(verdict["index"]["script"], matches, "{verdict}");
        let parts: Vec<&Value> = verdict["filter"]["parts"]
            .as_array()
            .unwrap()
            .iter()
            .map(|part| &part["holds"])
            .collect();
        assert_eq!(parts, [&json!(matches), &json!(matches)], "{verdict}");
        assert_eq!(verdict["rule"]["holds"], true, "{verdict}");
    }

    // A rule decided by the subscriber alone: false files the subscription nowhere, true leaves
    // nothing to run.
    for (role, matches, placement) in [("member", false, "never"), ("admin", true, "scan")] {
        let verdict = evaluate(
            &server,
            json!({
                "rule": "@request.auth.role = 'admin'",
                "record": draft,
                "auth": { "id": "u2", "role": role },
            }),
        )
        .await;
        assert_eq!(verdict["matches"], matches, "{verdict}");
        assert_eq!(verdict["rule"]["decided_by"], "subscription", "{verdict}");
        assert_eq!(verdict["index"]["placement"], placement, "{verdict}");
        assert_eq!(verdict["index"]["decided_by"], "subscription", "{verdict}");
    }

    // The admin bypasses `SUPERUSER_ONLY` (an absent rule); a user and a guest are refused with
    // the status a real subscribe answers.
    let admin = evaluate(&server, json!({ "record": draft, "admin": true })).await;
    assert_eq!(admin["matches"], true, "{admin}");
    assert_eq!(admin["rule"]["decided_by"], "admin", "{admin}");
    let rule = "@request.auth.id != ''";
    let made = server
        .call(
            Method::POST,
            "/api/collections",
            Some(ADMIN),
            Some(json!({ "name": "members", "api_rules": { "list": rule } })),
        )
        .await;
    assert_eq!(made.status, StatusCode::CREATED, "{:?}", made.body);
    let alice = server.token("alice", json!({}), Some(3600));
    for (list, token, auth) in [
        (Value::Null, Some(alice.as_str()), json!({ "sub": "alice" })),
        (json!(rule), None, Value::Null),
    ] {
        let mut body = json!({ "record": draft });
        if !list.is_null() {
            body["rule"] = list.clone();
        }
        if !auth.is_null() {
            body["auth"] = auth;
        }
        let verdict = evaluate(&server, body).await;
        let collection = if list.is_null() {
            "posts_secret"
        } else {
            "members"
        };
        if list.is_null() {
            let made = server
                .call(
                    Method::POST,
                    "/api/collections",
                    Some(ADMIN),
                    Some(json!({ "name": collection })),
                )
                .await;
            assert_eq!(made.status, StatusCode::CREATED, "{:?}", made.body);
        }
        let subscribe = server.subscribe(token, collection, None).await;
        assert_eq!(
            verdict["refused"]["status"],
            subscribe.status.as_u16(),
            "{verdict}"
        );
        assert_eq!(
            verdict["refused"]["message"], subscribe.body["message"],
            "{verdict}"
        );
        assert_eq!(
            (&verdict["matches"], &verdict["rule"]["decided_by"]),
            (&json!(false), &json!("refused"))
        );
        assert!(verdict.get("index").is_none(), "{verdict}");
    }
}

#[tokio::test]
async fn the_playground_refuses_what_it_cannot_evaluate() {
    let server = Server::start(COLLECTIONS);
    let path = "/api/expressions/evaluate";
    let body = json!({ "filter": "a = 1", "record": {} });
    let guest = server
        .call(Method::POST, path, None, Some(body.clone()))
        .await;
    assert_eq!(guest.status, StatusCode::UNAUTHORIZED);
    let user = server.token("alice", json!({}), Some(3600));
    let user = server
        .call(Method::POST, path, Some(&user), Some(body))
        .await;
    assert_eq!(user.status, StatusCode::FORBIDDEN);
    for (wrong, field) in [
        (
            json!({ "filter": "a = ", "record": {}, "admin": true }),
            Some("filter"),
        ),
        (json!({ "rule": "a = 1 &&", "record": {} }), Some("rule")),
        (
            json!({ "record": {}, "auth": { "role": "x" } }),
            Some("auth"),
        ),
        (
            json!({ "record": {}, "auth": { "id": "u1" }, "admin": true }),
            Some("auth"),
        ),
        (json!({ "record": [1] }), None),
        (json!({ "filter": "a = 1" }), None),
        (json!({ "record": {}, "claims": {} }), None),
        // Anyone may subscribe: the filter is read (and refused). A guest refused by the rule is
        // answered with the refusal instead, as a subscribe is (below).
        (
            json!({ "filter": "a = ", "rule": "", "record": {} }),
            Some("filter"),
        ),
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
        if let Some(field) = field {
            assert!(
                reply.body["errors"][field].is_array(),
                "{wrong}: {:?}",
                reply.body
            );
        }
    }
    let refused = evaluate(
        &server,
        json!({ "filter": "a = ", "rule": "@request.auth.id != ''", "record": {} }),
    )
    .await;
    assert_eq!(refused["refused"]["status"], 401, "{refused}");
    assert_eq!(
        refused["filter"],
        json!({ "expression": "a = ", "holds": false, "decided_by": "refused", "parts": [] })
    );

    // A record no write could store is no event.
    let big = json!({ "record": { "text": "x".repeat(300 << 10) }, "admin": true });
    let reply = server
        .call(Method::POST, path, Some(ADMIN), Some(big))
        .await;
    assert_eq!(
        reply.status,
        StatusCode::PAYLOAD_TOO_LARGE,
        "{:?}",
        reply.body
    );
}

/// A console ticket, from `POST /api/console/tickets`.
async fn ticket(server: &Server) -> String {
    let reply = server
        .call(Method::POST, "/api/console/tickets", Some(ADMIN), None)
        .await;
    assert_eq!(reply.status, StatusCode::CREATED, "{:?}", reply.body);
    reply.body["path"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn the_tail_sends_one_row_per_event_with_its_sockets_to_a_ticket_holder_once() {
    let server = Server::start(COLLECTIONS);
    let path = ticket(&server).await;
    let (mut tail, _) = tokio_tungstenite::connect_async(server.ws_url(&path))
        .await
        .expect("the tail opens with a ticket");
    // A ticket is good once; a socket without one is refused before the upgrade.
    for refused in [path.clone(), "/api/console/tail".to_owned()] {
        let error = tokio_tungstenite::connect_async(server.ws_url(&refused))
            .await
            .expect_err("refused");
        match error {
            tokio_tungstenite::tungstenite::Error::Http(response) => {
                assert_eq!(response.status(), StatusCode::UNAUTHORIZED, "{refused}")
            }
            other => panic!("{refused}: {other}"),
        }
    }
    let guest = server
        .call(Method::POST, "/api/console/tickets", None, None)
        .await;
    assert_eq!(guest.status, StatusCode::UNAUTHORIZED);

    // Two subscriptions match the record and one socket listens: one row, two channels.
    let mut channels = Vec::new();
    for _ in 0..2 {
        let reply = server.subscribe(None, "posts", None).await;
        channels.push(reply.body["pusher_channel"].as_str().unwrap().to_owned());
    }
    let (mut socket, _) = ws::connect(&server).await;
    ws::subscribe(&mut socket, &channels[0], None).await;
    let written = Instant::now();
    let created = server
        .call(
            Method::POST,
            "/api/collections/posts/records",
            Some(ADMIN),
            Some(json!({ "title": "to the tail" })),
        )
        .await;
    assert_eq!(created.status, StatusCode::CREATED, "{:?}", created.body);
    let message = ws::frame(&mut tail).await;
    println!(
        "tail row {:?} after the write: {message}",
        written.elapsed()
    );
    assert_eq!(message["type"], "event");
    assert_eq!(message["dropped"], 0);
    let row = &message["event"];
    assert_eq!(row["source"], "record");
    assert_eq!(row["event"], "created");
    assert_eq!(row["channels"], 2);
    assert_eq!(row["sockets"], 1);
    assert!(
        channels.iter().any(|channel| row["channel"] == *channel),
        "{row}"
    );
    assert!(
        row["data"].as_str().unwrap().contains("to the tail"),
        "{row}"
    );

    // A Pusher trigger to two channels: one row.
    let triggered = server
        .pusher_api(
            Method::POST,
            &format!("/apps/{APP_ID}/events"),
            Some(&json!({ "name": "news", "channels": ["a", "b"], "data": "{\"n\":1}" })),
        )
        .await;
    assert_eq!(triggered.status, StatusCode::OK, "{:?}", triggered.body);
    let row = ws::frame(&mut tail).await["event"].clone();
    assert_eq!(
        (
            row["source"].clone(),
            row["event"].clone(),
            row["channel"].clone(),
            row["channels"].clone(),
            row["sockets"].clone()
        ),
        (
            json!("trigger"),
            json!("news"),
            json!("a"),
            json!(2),
            json!(0)
        )
    );
}

#[tokio::test]
async fn the_overview_counts_connections_subscriptions_and_channel_sockets() {
    let server = Server::start(COLLECTIONS);
    let overview = || server.call(Method::GET, "/api/console/overview", Some(ADMIN), None);
    let empty = overview().await;
    assert_eq!(empty.status, StatusCode::OK, "{:?}", empty.body);
    assert_eq!(
        empty.body,
        json!({
            "connections": 0,
            "collections": [{ "collection": "posts", "subscriptions": 0 }],
            "channels": [],
            "channel_count": 0,
            "tail_watchers": 0,
        })
    );
    let reply = server.subscribe(None, "posts", None).await;
    let channel = reply.body["pusher_channel"].as_str().unwrap().to_owned();
    let (mut socket, _) = ws::connect(&server).await;
    ws::subscribe(&mut socket, &channel, None).await;
    let (_tail, _) = tokio_tungstenite::connect_async(server.ws_url(&ticket(&server).await))
        .await
        .expect("the tail opens");
    let now = overview().await.body;
    assert_eq!(now["connections"], 1, "{now}");
    assert_eq!(now["collections"][0]["subscriptions"], 1, "{now}");
    assert_eq!(
        now["channels"],
        json!([{ "channel": channel, "sockets": 1 }])
    );
    assert_eq!(now["channel_count"], 1);
    assert_eq!(now["tail_watchers"], 1);

    // A presence channel lists its members: users, not sockets.
    let app = AppCredentials::new(APP_ID, APP_KEY, APP_SECRET);
    let mut sockets = Vec::new();
    for user in ["bob", "alice", "alice"] {
        let (mut socket, socket_id) = ws::connect(&server).await;
        let channel_data = json!({ "user_id": user }).to_string();
        let auth = app.authorize(&socket_id, "presence-room", Some(&channel_data));
        ws::send(
            &mut socket,
            json!({ "event": "pusher:subscribe", "data": {
                "channel": "presence-room", "auth": auth, "channel_data": channel_data,
            }}),
        )
        .await;
        loop {
            let frame = ws::frame(&mut socket).await;
            if frame["event"] == "pusher_internal:subscription_succeeded" {
                break;
            }
            assert_eq!(frame["event"], "pusher_internal:member_added", "{frame}");
        }
        sockets.push(socket);
    }
    let now = overview().await.body;
    assert_eq!(now["connections"], 4, "{now}");
    assert_eq!(
        now["channels"][0],
        json!({ "channel": "presence-room", "sockets": 3, "members": { "count": 2, "user_ids": ["alice", "bob"] } })
    );
    assert_eq!(now["channels"].as_array().unwrap().len(), 2, "{now}");
    assert!(now["channels"][1].get("members").is_none(), "{now}");
    assert!(
        now.get("node").is_none(),
        "a single server names no node: {now}"
    );

    let guest = server
        .call(Method::GET, "/api/console/overview", None, None)
        .await;
    assert_eq!(guest.status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn a_burst_past_200_rows_a_second_is_counted_as_dropped() {
    const EVENTS: u64 = 1000;
    let server = Server::start(COLLECTIONS);
    let (mut tail, _) = tokio_tungstenite::connect_async(server.ws_url(&ticket(&server).await))
        .await
        .expect("the tail opens");
    // The batches all at once, so that the burst is short and its rows are well over the limit
    // of its windows.
    let burst = Instant::now();
    let path = format!("/apps/{APP_ID}/batch_events");
    let replies = futures::future::join_all((0..EVENTS).step_by(10).map(|first| {
        let batch: Vec<Value> = (first..first + 10)
            .map(|n| json!({ "name": "burst", "channel": "burst", "data": n.to_string() }))
            .collect();
        let body = json!({ "batch": batch });
        let (server, path) = (&server, &path);
        async move { server.pusher_api(Method::POST, path, Some(&body)).await }
    }))
    .await;
    for reply in replies {
        assert_eq!(reply.status, StatusCode::OK, "{:?}", reply.body);
    }
    let burst = burst.elapsed();
    // Every event is either a row or counted: read until they add up (the count is reported
    // within a second of growing).
    let (mut rows, mut dropped) = (0u64, 0u64);
    while rows + dropped < EVENTS {
        let message = ws::frame(&mut tail).await;
        dropped = message["dropped"].as_u64().unwrap();
        if message["type"] == "event" {
            rows += 1;
        }
    }
    println!("{EVENTS} events sent in {burst:?}: {rows} rows, {dropped} dropped");
    assert_eq!(rows + dropped, EVENTS);
    // At most 200 rows in each second-long window the burst touched.
    let windows = burst.as_secs() + 2;
    assert!(rows <= 200 * windows, "{rows} rows in {burst:?}");
}

/// `POST /api/console/events` as the admin.
async fn trigger_from_console(server: &Server, body: Value) -> support::Reply {
    server
        .call(Method::POST, "/api/console/events", Some(ADMIN), Some(body))
        .await
}

#[tokio::test]
async fn a_trigger_from_the_console_reaches_a_subscribed_socket_and_the_tail() {
    let server = Server::start(COLLECTIONS);
    let (mut tail, _) = tokio_tungstenite::connect_async(server.ws_url(&ticket(&server).await))
        .await
        .expect("the tail opens");
    let (mut socket, socket_id) = ws::connect(&server).await;
    ws::subscribe(&mut socket, "console-news", None).await;
    let sent = Instant::now();
    let reply = trigger_from_console(
        &server,
        json!({ "channels": ["console-news", "elsewhere"], "event": "breaking", "data": "{\"n\":1}" }),
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK, "{:?}", reply.body);
    assert_eq!(reply.body, json!({ "channels": 2, "sockets": 1 }));
    let frame = ws::frame(&mut socket).await;
    println!(
        "the socket got it {:?} after the request: {frame}",
        sent.elapsed()
    );
    // As the Pusher HTTP API sends it: `data` verbatim.
    assert_eq!(
        frame,
        json!({ "event": "breaking", "channel": "console-news", "data": "{\"n\":1}" })
    );
    let row = ws::frame(&mut tail).await["event"].clone();
    assert_eq!(
        (
            row["source"].clone(),
            row["event"].clone(),
            row["channel"].clone(),
            row["channels"].clone(),
            row["sockets"].clone(),
        ),
        (
            json!("trigger"),
            json!("breaking"),
            json!("console-news"),
            json!(2),
            json!(1)
        )
    );

    // `socket_id` leaves that socket out, as the HTTP API's does: the next frame it reads is
    // the one sent without it.
    let reply = trigger_from_console(
        &server,
        json!({ "channels": ["console-news"], "event": "skipped", "data": "", "socket_id": socket_id }),
    )
    .await;
    assert_eq!(reply.body, json!({ "channels": 1, "sockets": 0 }));
    let reply = trigger_from_console(
        &server,
        json!({ "channels": ["console-news"], "event": "received", "data": "x" }),
    )
    .await;
    assert_eq!(reply.body, json!({ "channels": 1, "sockets": 1 }));
    assert_eq!(ws::frame(&mut socket).await["event"], "received");
}

#[tokio::test]
async fn a_trigger_from_the_console_is_for_the_admin_within_the_http_apis_limits() {
    let server = Server::start(COLLECTIONS);
    let path = "/api/console/events";
    let good = json!({ "channels": ["news"], "event": "breaking", "data": "{}" });
    let guest = server
        .call(Method::POST, path, None, Some(good.clone()))
        .await;
    assert_eq!(guest.status, StatusCode::UNAUTHORIZED, "{:?}", guest.body);
    let user = server.token("alice", json!({}), Some(3600));
    let user = server
        .call(Method::POST, path, Some(&user), Some(good.clone()))
        .await;
    assert_eq!(user.status, StatusCode::FORBIDDEN, "{:?}", user.body);
    let not_json = server
        .raw(
            server
                .request(Method::POST, path)
                .bearer_auth(ADMIN)
                .header("content-type", "application/json")
                .body("{\"channels\": "),
        )
        .await;
    assert_eq!(
        not_json.status,
        StatusCode::BAD_REQUEST,
        "{:?}",
        not_json.body
    );

    let too_much = "x".repeat(10 * 1024 + 1);
    let many: Vec<String> = (0..101).map(|n| format!("c{n}")).collect();
    for (body, field) in [
        (
            json!({ "channels": ["no spaces"], "event": "e", "data": "" }),
            "channels",
        ),
        (
            json!({ "channels": [], "event": "e", "data": "" }),
            "channels",
        ),
        (
            json!({ "channels": many, "event": "e", "data": "" }),
            "channels",
        ),
        (
            json!({ "channels": ["news"], "event": "e", "data": too_much }),
            "data",
        ),
        (
            json!({ "channels": ["news"], "event": "", "data": "" }),
            "event",
        ),
        (
            json!({ "channels": ["news"], "event": "e".repeat(201), "data": "" }),
            "event",
        ),
        (
            json!({ "channels": ["news"], "event": "e", "data": "", "socket_id": "12" }),
            "socket_id",
        ),
        (
            json!({ "channels": ["news"], "event": "e", "data": { "n": 1 } }),
            "data",
        ),
        (json!({ "channels": ["news"], "event": "e" }), "data"),
        // Not read as the text "false" (poem-openapi would): refused by its type.
        (
            json!({ "channels": ["news", false], "event": "e", "data": "" }),
            "channels[1]",
        ),
        (
            json!({ "channels": ["news"], "event": "e", "data": "", "socket": "1.2" }),
            "socket",
        ),
    ] {
        let reply = trigger_from_console(&server, body.clone()).await;
        assert_eq!(
            reply.status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{body}: {:?}",
            reply.body
        );
        assert!(
            reply.body["errors"][field].is_array(),
            "{field} for {body}: {:?}",
            reply.body
        );
    }

    // The HTTP API refuses the same events in its own words, as before.
    let events = format!("/apps/{APP_ID}/events");
    let refused = server
        .pusher_api(
            Method::POST,
            &events,
            Some(&json!({ "name": "e", "channels": ["no spaces"], "data": "" })),
        )
        .await;
    assert_eq!(
        (refused.status, refused.body),
        (
            StatusCode::BAD_REQUEST,
            json!({ "error": "invalid channel name `no spaces`" })
        )
    );
    let refused = server
        .pusher_api(
            Method::POST,
            &events,
            Some(&json!({ "name": "e", "channel": "news", "data": too_much })),
        )
        .await;
    assert_eq!(
        (refused.status, refused.body),
        (
            StatusCode::PAYLOAD_TOO_LARGE,
            json!({ "error": "`data` is over the limit of 10240 bytes" })
        )
    );
}
