//! Hooks (DESIGN.md §14) against the real server, over real HTTP and WebSockets: each hook, a
//! runaway stopped by the sandbox's limits, and a reload. The hooks directory is a temp dir
//! each test writes its scripts into.

mod support;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use support::clients::{self, run};
use support::ws::{self, event};
use support::{ADMIN, APP_KEY, Reply, Server, eventually};
use tempfile::TempDir;

const COLLECTIONS: &str = r#"
[[collections]]
name = "posts"
api_rules = { list = "", view = "", create = "", update = "", delete = "" }

[[collections]]
name = "contacts"
api_rules = { list = "@request.auth.id != ''" }
"#;

/// A hooks directory holding `files` (name, text).
fn hooks_dir(files: &[(&str, &str)]) -> TempDir {
    let dir = tempfile::tempdir().expect("a temp dir");
    for (name, text) in files {
        std::fs::write(dir.path().join(name), text).expect("writing a hook");
    }
    dir
}

fn start(dir: &TempDir) -> Server {
    let path = dir.path().to_str().unwrap();
    Server::start_with_env(COLLECTIONS, 300, &[("VELO_HOOKS_DIR", path)])
}

async fn create(server: &Server, token: Option<&str>, record: Value) -> Reply {
    server
        .call(
            Method::POST,
            "/api/collections/posts/records",
            token,
            Some(record),
        )
        .await
}

async fn write(server: &Server, method: Method, path: &str, body: Option<Value>) -> Reply {
    server
        .call(
            method,
            &format!("/api/collections/posts/records{path}"),
            Some(ADMIN),
            body,
        )
        .await
}

#[test]
fn per_user_redaction_is_seen_by_two_users_over_pusher_js() {
    let dir = hooks_dir(&[(
        "redact.rhai",
        r#"
        // Hide `email` from everyone but the record's owner.
        fn realtime_broadcast(event) {
            if event.auth.id != event.record.owner {
                let record = event.record;
                record.remove("email");
                return record;
            }
        }
        "#,
    )]);
    let server = start(&dir);
    let node = clients::with_npm_packages("node");
    let output = run(
        Command::new("node")
            .arg(node.join("hooks.mjs"))
            .current_dir(&node)
            .env("VELO_URL", &server.base)
            .env("APP_KEY", APP_KEY)
            .env("ADMIN", ADMIN)
            .env("ALICE", server.token("alice", json!({}), Some(3600)))
            .env("BOB", server.token("bob", json!({}), Some(3600))),
        "hooks.mjs",
    );
    println!("{output}");
    assert_eq!(output.matches(": ok").count(), 1, "{output}");
}

#[tokio::test]
async fn realtime_broadcast_suppresses_a_delivery_without_taking_a_seq() {
    let dir = hooks_dir(&[(
        "hide.rhai",
        r#"
        fn realtime_broadcast(event) {
            if event.record.hidden == true { return false; }
            if event.record.spin == true { loop {} }
            if event.record.secret != () {
                let record = event.record;
                record.remove("secret");
                record.redacted = true;
                return record;
            }
            if event.action != "created" || event.collection != "posts" || !event.channel.contains("velo.realtime.") {
                throw "unexpected event " + event;
            }
        }
        "#,
    )]);
    let server = start(&dir);
    let reply = server
        .call(
            Method::POST,
            "/api/realtime/subscribe",
            None,
            Some(json!({"collection": "posts", "leave_events": true})),
        )
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{:?}", reply.body);
    let channel = reply.body["pusher_channel"].as_str().unwrap().to_owned();
    let (mut socket, _) = ws::connect(&server).await;
    ws::subscribe(&mut socket, &channel, None).await;
    for record in [
        json!({"id": "p1"}),
        json!({"id": "p2", "hidden": true}),
        json!({"id": "p3", "spin": true}),
        json!({"id": "p4"}),
        json!({"id": "p5", "secret": "s"}),
    ] {
        assert_eq!(
            create(&server, None, record).await.status,
            StatusCode::CREATED
        );
    }
    let (name, first) = event(&mut socket).await;
    assert_eq!(
        (name.as_str(), &first["record"]["id"], &first["seq"]),
        ("created", &json!("p1"), &json!(1))
    );
    // p2 was suppressed, p3's hook ran out of operations (suppressed, counted): no seq taken.
    let (_, next) = event(&mut socket).await;
    assert_eq!(
        (&next["record"]["id"], &next["seq"]),
        (&json!("p4"), &json!(2))
    );
    // A record the hook returned goes to this subscription alone, numbered in its turn, and is
    // what recovery gives back.
    let (_, redacted) = event(&mut socket).await;
    assert_eq!(redacted["seq"], 3);
    assert_eq!(redacted["record"]["redacted"], true);
    assert!(redacted["record"].get("secret").is_none(), "{redacted}");
    let recovered = server
        .call(
            Method::GET,
            &format!("/api/realtime/subscriptions/{channel}/events?after=0"),
            None,
            None,
        )
        .await;
    assert_eq!(recovered.status, StatusCode::OK, "{:?}", recovered.body);
    let events: Vec<&Value> = recovered.body["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|event| &event["data"])
        .collect();
    assert_eq!(events.len(), 3, "{events:?}");
    assert_eq!(events[2], &redacted);
    server
        .wait_for_metrics(&["velo_hook_failures_total 1"])
        .await
        .expect("the runaway broadcast hook is counted");
    assert!(
        server
            .wait_for_log(&["realtime_broadcast", "a hook failed"])
            .await
    );
}

#[tokio::test]
async fn realtime_connecting_refuses_a_subscription_with_403_and_its_message() {
    let dir = hooks_dir(&[(
        "connecting.rhai",
        r#"
        fn realtime_connecting(ctx) {
            if ctx.filter.contains("secret") {
                throw "no secrets in " + ctx.collection + " for " + ctx.auth.id;
            }
            if ctx.filter == "spin = 1" { loop {} }
            if ctx.collection == "contacts" && ctx.socket_id != "" { throw "socket " + ctx.socket_id; }
        }
        "#,
    )]);
    let server = start(&dir);
    let alice = server.token("alice", json!({}), Some(3600));
    let refused = server
        .subscribe(Some(&alice), "posts", Some("secret = 'x'"))
        .await;
    assert_eq!(refused.status, StatusCode::FORBIDDEN);
    assert_eq!(
        refused.body,
        json!({"message": "no secrets in posts for alice"})
    );
    let runaway = server.subscribe(None, "posts", Some("spin = 1")).await;
    assert_eq!(runaway.status, StatusCode::FORBIDDEN);
    let message = runaway.body["message"].as_str().unwrap();
    assert!(
        message.contains("realtime_connecting hook failed"),
        "{message}"
    );
    let with_socket = server
        .call(
            Method::POST,
            "/api/realtime/subscribe",
            Some(&alice),
            Some(json!({"collection": "contacts", "socket_id": "123.456"})),
        )
        .await;
    assert_eq!(with_socket.body, json!({"message": "socket 123.456"}));
    let accepted = server.subscribe(None, "posts", Some("title = 'ok'")).await;
    assert_eq!(accepted.status, StatusCode::OK, "{:?}", accepted.body);
}

#[tokio::test]
async fn record_before_hooks_change_or_refuse_writes() {
    let dir = hooks_dir(&[(
        "records.rhai",
        r#"
        fn record_creating(ctx) {
            if ctx.record.title == "" { throw "a title, please"; }
            if ctx.record.title == "admin only" && ctx.auth.id != () {
                throw #{status: 403, message: "only the admin may, " + ctx.auth.id};
            }
            let record = ctx.record;
            record.slug = record.title.to_lower();
            record.id = "not-the-servers";
            record
        }
        fn record_updating(ctx) {
            if ctx.record.title != ctx.old.title && ctx.old.locked == true { throw "locked"; }
        }
        fn record_deleting(ctx) {
            if ctx.record.keep == true && ctx.old.keep == true { throw "kept"; }
        }
        "#,
    )]);
    let server = start(&dir);
    let refused = create(&server, None, json!({"title": ""})).await;
    assert_eq!(refused.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(refused.body["message"], "a title, please");
    assert_eq!(refused.body["errors"]["hook"], json!(["a title, please"]));
    let bob = server.token("bob", json!({}), Some(3600));
    let forbidden = create(&server, Some(&bob), json!({"title": "admin only"})).await;
    assert_eq!(forbidden.status, StatusCode::FORBIDDEN);
    assert_eq!(
        forbidden.body,
        json!({"message": "only the admin may, bob"})
    );

    let created = create(
        &server,
        None,
        json!({"id": "p1", "title": "Hello World", "locked": true}),
    )
    .await;
    assert_eq!(created.status, StatusCode::CREATED, "{:?}", created.body);
    let record = &created.body["data"];
    assert_eq!(record["slug"], "hello world");
    assert_eq!(record["id"], "p1", "system fields stay the server's");
    let stored = write(&server, Method::GET, "/p1", None).await;
    assert_eq!(stored.body["data"]["slug"], "hello world");

    let locked = write(&server, Method::PATCH, "/p1", Some(json!({"title": "x"}))).await;
    assert_eq!(
        (locked.status, &locked.body["message"]),
        (StatusCode::UNPROCESSABLE_ENTITY, &json!("locked"))
    );
    let untouched = write(
        &server,
        Method::PATCH,
        "/p1",
        Some(json!({"n": 1, "keep": true})),
    )
    .await;
    assert_eq!(untouched.status, StatusCode::OK, "{:?}", untouched.body);
    let kept = write(&server, Method::DELETE, "/p1", None).await;
    assert_eq!(
        (kept.status, &kept.body["message"]),
        (StatusCode::UNPROCESSABLE_ENTITY, &json!("kept"))
    );
    assert_eq!(
        write(&server, Method::GET, "/p1", None).await.status,
        StatusCode::OK
    );
}

#[tokio::test]
async fn an_infinite_loop_is_stopped_by_the_limits_and_the_server_serves_on() {
    let dir = hooks_dir(&[(
        "spin.rhai",
        r#"
        fn record_creating(ctx) {
            if ctx.record.spin == true { let n = 0; loop { n += 1; } }
        }
        "#,
    )]);
    let server = start(&dir);
    let started = std::time::Instant::now();
    let stopped = create(&server, None, json!({"spin": true})).await;
    println!(
        "a runaway before-hook was answered in {:?}",
        started.elapsed()
    );
    assert_eq!(stopped.status, StatusCode::UNPROCESSABLE_ENTITY);
    let message = stopped.body["message"].as_str().unwrap();
    assert!(
        message.contains("record_creating hook failed") && message.contains("Too many operations"),
        "{message}"
    );
    server
        .wait_for_metrics(&["velo_hook_failures_total 1"])
        .await
        .expect("the failure is counted");
    // The collection's actor is not stuck: the next write goes through.
    let fine = create(&server, None, json!({"spin": false})).await;
    assert_eq!(fine.status, StatusCode::CREATED, "{:?}", fine.body);
}

#[tokio::test]
async fn after_hooks_see_the_stored_record_and_trigger_events() {
    let dir = hooks_dir(&[(
        "audit.rhai",
        r#"
        fn record_created(ctx) {
            log("created " + ctx.record.id);
            trigger("audit", "record-created", #{id: ctx.record.id, by: ctx.auth.id, collection: ctx.collection});
        }
        fn record_deleted(ctx) {
            trigger("audit", "record-deleted", ctx.record.id);
        }
        fn record_updated(ctx) { loop {} }
        "#,
    )]);
    let server = start(&dir);
    let (mut socket, _) = ws::connect(&server).await;
    let subscribed = ws::subscribe(&mut socket, "audit", None).await;
    assert_eq!(
        subscribed["event"],
        "pusher_internal:subscription_succeeded"
    );
    let bob = server.token("bob", json!({}), Some(3600));
    assert_eq!(
        create(&server, Some(&bob), json!({"id": "p1"}))
            .await
            .status,
        StatusCode::CREATED
    );
    let frame = ws::frame(&mut socket).await;
    assert_eq!(frame["event"], "record-created");
    let data: Value = serde_json::from_str(frame["data"].as_str().unwrap()).unwrap();
    assert_eq!(
        data,
        json!({"id": "p1", "by": "bob", "collection": "posts"})
    );
    assert!(
        server.wait_for_log(&["created p1"]).await,
        "log() is logged"
    );
    // A failing after-hook changes nothing the client sees: logged and counted.
    let updated = write(&server, Method::PATCH, "/p1", Some(json!({"n": 1}))).await;
    assert_eq!(updated.status, StatusCode::OK);
    server
        .wait_for_metrics(&["velo_hook_failures_total 1"])
        .await
        .expect("the failure is counted");
    assert_eq!(
        write(&server, Method::DELETE, "/p1", None).await.status,
        StatusCode::NO_CONTENT
    );
    let frame = ws::frame(&mut socket).await;
    assert_eq!(
        (&frame["event"], &frame["data"]),
        (&json!("record-deleted"), &json!("p1"))
    );
}

/// The `stamp` a created record gets from the current hooks.
async fn stamp(server: &Server) -> Value {
    let created = create(server, None, json!({})).await;
    assert_eq!(created.status, StatusCode::CREATED, "{:?}", created.body);
    created.body["data"]["stamp"].clone()
}

fn stamping(version: &str) -> String {
    format!(
        r#"fn record_creating(ctx) {{ let record = ctx.record; record.stamp = "{version}"; record }}"#
    )
}

#[tokio::test]
async fn a_changed_file_is_reloaded_and_a_broken_set_keeps_the_previous_one() {
    let dir = hooks_dir(&[("stamp.rhai", &stamping("v1"))]);
    let server = start(&dir);
    assert_eq!(stamp(&server).await, "v1");
    put(dir.path(), "stamp.rhai", &stamping("version 2"));
    assert!(
        eventually(Duration::from_secs(10), || async {
            stamp(&server).await == "version 2"
        })
        .await,
        "the changed file is loaded"
    );
    // A file that does not compile: the previous set stays.
    put(dir.path(), "stamp.rhai", "fn record_creating(ctx) { ");
    assert!(
        server
            .wait_for_log(&["hooks not reloaded", "stamp.rhai"])
            .await
    );
    assert_eq!(stamp(&server).await, "version 2");
    // Two files defining the same function: the previous set stays too. (The second file
    // comes first, while the other is still broken, so that no set ever has only one.)
    put(dir.path(), "other.rhai", &stamping("v4"));
    put(dir.path(), "stamp.rhai", &stamping("v3"));
    assert!(
        server
            .wait_for_log(&["hooks not reloaded", "defined in both"])
            .await
    );
    assert_eq!(stamp(&server).await, "version 2");
    // Fixed: the new set is loaded.
    std::fs::remove_file(dir.path().join("other.rhai")).unwrap();
    assert!(
        eventually(Duration::from_secs(10), || async {
            stamp(&server).await == "v3"
        })
        .await,
        "the fixed set is loaded"
    );
    // SIGHUP reloads at once, changed or not.
    server.signal("HUP");
    assert!(server.wait_for_log(&["hooks reloaded", "SIGHUP"]).await);
}

/// Replaces a hook file at once (written aside, then renamed), so that the server never
/// reads it half-written.
fn put(dir: &Path, name: &str, text: &str) {
    let aside = dir.join(format!("{name}.part"));
    std::fs::write(&aside, text).unwrap();
    std::fs::rename(aside, dir.join(name)).unwrap();
}

#[tokio::test]
async fn a_hooks_set_that_does_not_compile_stops_the_start() {
    let dir = hooks_dir(&[("bad.rhai", "fn realtime_broadcast() { }")]);
    let mut server = Server::start(COLLECTIONS);
    server.kill();
    let path = dir.path().to_str().unwrap();
    let (status, log) = server.failed_start_with_env(&[("VELO_HOOKS_DIR", path)]);
    assert!(!status.success());
    assert!(log.contains("must take one parameter"), "{log}");
}
