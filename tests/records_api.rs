//! Records and their change events against the real server: the records API under its rules,
//! events reaching exactly the matching subscriptions over WebSockets, publish, and
//! durability across restarts and kill -9.

mod support;

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use support::ws::{Socket, connect, event, frame, send, subscribe};
use support::{ADMIN, Server};

const COLLECTIONS: &str = r#"
[[collections]]
name = "posts"
api_rules = { list = "", view = "", create = "", update = "", delete = "" }

[[collections]]
name = "notes"
api_rules = { list = "@request.auth.id = owner", view = "@request.auth.id = owner", create = "@request.auth.id != '' && owner = @request.auth.id", update = "@request.auth.id = owner", delete = "@request.auth.id = owner" }

[[collections]]
name = "secrets"
"#;

fn record(reply: &support::Reply) -> &Value {
    &reply.body["data"]
}

/// A socket listening on a realtime subscription's channel (authorized when private).
async fn listen(
    server: &Server,
    token: Option<&str>,
    collection: &str,
    filter: Option<&str>,
) -> (Socket, String) {
    let subscribed = server.subscribe(token, collection, filter).await;
    assert_eq!(subscribed.status, StatusCode::OK, "{:?}", subscribed.body);
    let name = subscribed.body["channel_name"].as_str().unwrap().to_owned();
    let (mut socket, socket_id) = connect(server).await;
    let channel = if subscribed.body["is_public"] == true {
        subscribe(&mut socket, &name, Some("")).await
    } else {
        let private = format!("private-{name}");
        let body = json!({"socket_id": socket_id, "channel_name": private});
        let auth = server
            .call(Method::POST, "/api/realtime/auth", token, Some(body))
            .await;
        assert_eq!(auth.status, StatusCode::OK, "{:?}", auth.body);
        subscribe(&mut socket, &private, auth.body["auth"].as_str()).await
    };
    assert_eq!(channel["event"], "pusher_internal:subscription_succeeded");
    (socket, socket_id)
}

/// Proves nothing else is queued for the socket: a ping's pong comes next.
async fn nothing_more(socket: &mut Socket) {
    send(socket, json!({"event": "pusher:ping", "data": {}})).await;
    let next = frame(socket).await;
    assert_eq!(
        next["event"], "pusher:pong",
        "expected no event, got {next}"
    );
}

async fn create(
    server: &Server,
    collection: &str,
    token: Option<&str>,
    body: Value,
) -> support::Reply {
    server
        .call(
            Method::POST,
            &format!("/api/collections/{collection}/records"),
            token,
            Some(body),
        )
        .await
}

#[tokio::test]
async fn velos_broadcasting_tests_and_every_action() {
    let server = Server::start(COLLECTIONS);
    let (mut active, _) = listen(&server, None, "posts", Some("status = active")).await;
    let (mut everything, _) = listen(&server, None, "posts", None).await;

    // Velo's test 1: an active post reaches the `status = active` subscription.
    let created = create(
        &server,
        "posts",
        None,
        json!({"status": "active", "title": "Hello World"}),
    )
    .await;
    assert_eq!(created.status, StatusCode::CREATED, "{:?}", created.body);
    let post = record(&created).clone();
    let id = post["id"].as_str().unwrap().to_owned();
    assert_eq!(id.len(), 15);
    assert_eq!(post["collection_id"].as_str().unwrap().len(), 15);
    assert!(post["created"].as_str().unwrap().ends_with('Z') && post["created"] == post["updated"]);
    let (name, data) = event(&mut active).await;
    assert_eq!(name, "created");
    assert_eq!(data, json!({"action": "created", "record": post}));
    assert_eq!(data["record"]["status"], "active");
    assert_eq!(event(&mut everything).await.1["record"]["id"], id.as_str());

    // Velo's test 2: a draft sends that subscription nothing.
    let draft = create(
        &server,
        "posts",
        None,
        json!({"status": "draft", "title": "WIP"}),
    )
    .await;
    assert_eq!(draft.status, StatusCode::CREATED);
    assert_eq!(event(&mut everything).await.1["record"]["title"], "WIP");
    nothing_more(&mut active).await;

    // Updates match the record after the change; PATCH merges, PUT replaces.
    let path = format!("/api/collections/posts/records/{id}");
    let patched = server
        .call(
            Method::PATCH,
            &path,
            None,
            Some(json!({"views": 3, "id": "ignored"})),
        )
        .await;
    assert_eq!(patched.status, StatusCode::OK);
    assert_eq!(
        (
            record(&patched)["title"].as_str(),
            record(&patched)["views"].as_u64()
        ),
        (Some("Hello World"), Some(3))
    );
    assert_eq!(
        record(&patched)["id"],
        id.as_str(),
        "system fields in a body are ignored"
    );
    let (name, data) = event(&mut active).await;
    assert_eq!(
        (name.as_str(), data["action"].as_str()),
        ("updated", Some("updated"))
    );
    assert_eq!(data["record"]["views"], 3);
    event(&mut everything).await;

    let replaced = server
        .call(Method::PUT, &path, None, Some(json!({"status": "draft"})))
        .await;
    assert_eq!(
        record(&replaced).get("title"),
        None,
        "PUT replaces the fields"
    );
    assert_eq!(record(&replaced)["created"], post["created"]);
    event(&mut everything).await;
    nothing_more(&mut active).await; // no longer active: no `updated` for this filter

    // Deleted is matched against the record as it was.
    let back = server
        .call(
            Method::PATCH,
            &path,
            None,
            Some(json!({"status": "active"})),
        )
        .await;
    assert_eq!(back.status, StatusCode::OK);
    assert_eq!(event(&mut active).await.0, "updated");
    event(&mut everything).await;
    let deleted = server.call(Method::DELETE, &path, None, None).await;
    assert_eq!(deleted.status, StatusCode::NO_CONTENT);
    let (name, data) = event(&mut active).await;
    assert_eq!(
        (name.as_str(), data["record"]["status"].as_str()),
        ("deleted", Some("active"))
    );
    assert_eq!(event(&mut everything).await.0, "deleted");
    assert_eq!(
        server.call(Method::GET, &path, None, None).await.status,
        StatusCode::NOT_FOUND
    );
}

#[tokio::test]
async fn a_writers_own_socket_gets_no_echo() {
    let server = Server::start(COLLECTIONS);
    let (mut writer, writer_socket) = listen(&server, None, "posts", None).await;
    let (mut other, _) = listen(&server, None, "posts", None).await;
    let echoless = server
        .raw(
            server
                .request(Method::POST, "/api/collections/posts/records")
                .header("x-socket-id", &writer_socket)
                .json(&json!({"title": "mine"})),
        )
        .await;
    assert_eq!(echoless.status, StatusCode::CREATED);
    assert_eq!(event(&mut other).await.1["record"]["title"], "mine");
    nothing_more(&mut writer).await;
    let bad = server
        .raw(
            server
                .request(Method::POST, "/api/collections/posts/records")
                .header("x-socket-id", "nope")
                .json(&json!({})),
        )
        .await;
    assert_eq!(bad.status, StatusCode::UNPROCESSABLE_ENTITY);
}

#[tokio::test]
async fn per_user_rules_decide_records_and_events() {
    let server = Server::start(COLLECTIONS);
    let alice = server.token("alice", json!({}), Some(3600));
    let bob = server.token("bob", json!({}), Some(3600));
    let (mut alices, _) = listen(&server, Some(&alice), "notes", None).await;
    let (mut bobs, _) = listen(&server, Some(&bob), "notes", None).await;

    let mine = create(
        &server,
        "notes",
        Some(&alice),
        json!({"owner": "alice", "text": "a"}),
    )
    .await;
    assert_eq!(mine.status, StatusCode::CREATED, "{:?}", mine.body);
    assert_eq!(event(&mut alices).await.1["record"]["owner"], "alice");
    let spoofed = create(&server, "notes", Some(&alice), json!({"owner": "bob"})).await;
    assert_eq!(
        spoofed.status,
        StatusCode::FORBIDDEN,
        "the create rule checks the new record"
    );
    assert_eq!(
        create(&server, "notes", None, json!({"owner": ""}))
            .await
            .status,
        StatusCode::FORBIDDEN
    );
    let theirs = create(
        &server,
        "notes",
        Some(&bob),
        json!({"owner": "bob", "text": "b"}),
    )
    .await;
    assert_eq!(event(&mut bobs).await.1["record"]["owner"], "bob");
    nothing_more(&mut alices).await;
    nothing_more(&mut bobs).await;

    // List and view follow the rules; a hidden record is "not found".
    let listed = server
        .call(
            Method::GET,
            "/api/collections/notes/records",
            Some(&alice),
            None,
        )
        .await;
    assert_eq!(listed.body["meta"]["total"], 1);
    assert_eq!(listed.body["data"][0]["owner"], "alice");
    let guest_list = server
        .call(Method::GET, "/api/collections/notes/records", None, None)
        .await;
    assert_eq!(
        (guest_list.status, guest_list.body["meta"]["total"].as_u64()),
        (StatusCode::OK, Some(0))
    );
    let bobs_path = format!(
        "/api/collections/notes/records/{}",
        record(&theirs)["id"].as_str().unwrap()
    );
    assert_eq!(
        server
            .call(Method::GET, &bobs_path, Some(&alice), None)
            .await
            .status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        server
            .call(Method::GET, &bobs_path, Some(&bob), None)
            .await
            .status,
        StatusCode::OK
    );
    assert_eq!(
        server
            .call(Method::GET, &bobs_path, Some(ADMIN), None)
            .await
            .status,
        StatusCode::OK
    );
    let attempt = server
        .call(
            Method::PATCH,
            &bobs_path,
            Some(&alice),
            Some(json!({"text": "x"})),
        )
        .await;
    assert_eq!(attempt.status, StatusCode::FORBIDDEN);
    assert_eq!(
        server
            .call(Method::DELETE, &bobs_path, Some(&alice), None)
            .await
            .status,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        server
            .call(Method::DELETE, &bobs_path, Some(&bob), None)
            .await
            .status,
        StatusCode::NO_CONTENT
    );
    assert_eq!(event(&mut bobs).await.0, "deleted");
    nothing_more(&mut alices).await;

    // SUPERUSER_ONLY: the admin only.
    assert_eq!(
        create(&server, "secrets", Some(&alice), json!({}))
            .await
            .status,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        create(&server, "secrets", Some(ADMIN), json!({}))
            .await
            .status,
        StatusCode::CREATED
    );
    let refused = server
        .call(
            Method::GET,
            "/api/collections/secrets/records",
            Some(&alice),
            None,
        )
        .await;
    assert_eq!(refused.status, StatusCode::FORBIDDEN);
    let refused = server
        .call(Method::GET, "/api/collections/secrets/records", None, None)
        .await;
    assert_eq!(refused.status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn lists_filter_sort_and_page() {
    let server = Server::start(COLLECTIONS);
    for (title, views) in [("b", 5), ("a", 50), ("c", 10), ("d", 1)] {
        create(
            &server,
            "posts",
            None,
            json!({"title": title, "views": views}),
        )
        .await;
    }
    let page = server
        .call(
            Method::GET,
            "/api/collections/posts/records?filter=views%20%3E%202&sort=-views&per_page=2",
            None,
            None,
        )
        .await;
    assert_eq!(page.status, StatusCode::OK, "{:?}", page.body);
    let titles: Vec<&str> = page.body["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["title"].as_str().unwrap())
        .collect();
    assert_eq!(titles, ["a", "c"]);
    assert_eq!(
        page.body["meta"],
        json!({"page": 1, "per_page": 2, "total": 3, "last_page": 2})
    );
    let second = server
        .call(
            Method::GET,
            "/api/collections/posts/records?filter=views>2&sort=-views&per_page=2&page=2",
            None,
            None,
        )
        .await;
    assert_eq!(second.body["data"][0]["title"], "b");
    let by_title = server
        .call(
            Method::GET,
            "/api/collections/posts/records?sort=title",
            None,
            None,
        )
        .await;
    assert_eq!(by_title.body["data"][0]["title"], "a");
    assert_eq!(by_title.body["meta"]["per_page"], 15);

    for (query, field) in [
        ("filter=views%20%3E", "filter"),
        ("sort=a%20b", "sort"),
        ("per_page=501", "per_page"),
        ("page=0", "page"),
    ] {
        let reply = server
            .call(
                Method::GET,
                &format!("/api/collections/posts/records?{query}"),
                None,
                None,
            )
            .await;
        assert_eq!(reply.status, StatusCode::UNPROCESSABLE_ENTITY, "{query}");
        assert!(
            reply.body["errors"][field].is_array(),
            "{query}: {:?}",
            reply.body
        );
    }
    let reply = server
        .call(Method::GET, "/api/collections/nope/records", None, None)
        .await;
    assert_eq!(reply.status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn record_input_is_checked() {
    let server = Server::start(COLLECTIONS);
    let chosen = create(
        &server,
        "posts",
        None,
        json!({"id": "hello-1", "title": "x"}),
    )
    .await;
    assert_eq!(record(&chosen)["id"], "hello-1");
    let duplicate = create(&server, "posts", None, json!({"id": "hello-1"})).await;
    assert_eq!(duplicate.status, StatusCode::CONFLICT);
    let bad_id = create(&server, "posts", None, json!({"id": "not ok"})).await;
    assert_eq!(bad_id.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(bad_id.body["errors"]["id"].is_array());
    let not_object = server
        .call(
            Method::POST,
            "/api/collections/posts/records",
            None,
            Some(json!([1, 2])),
        )
        .await;
    assert_eq!(not_object.status, StatusCode::UNPROCESSABLE_ENTITY);
    let huge = create(
        &server,
        "posts",
        None,
        json!({"text": "x".repeat(300 * 1024)}),
    )
    .await;
    assert_eq!(huge.status, StatusCode::PAYLOAD_TOO_LARGE);
    let missing = server
        .call(
            Method::PATCH,
            "/api/collections/posts/records/none",
            None,
            Some(json!({})),
        )
        .await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn publish_delivers_without_storing() {
    let server = Server::start(COLLECTIONS);
    let (mut active, _) = listen(&server, None, "posts", Some("status = 'active'")).await;
    let body = json!({"collection": "posts", "action": "updated", "record": {"id": "ext-1", "status": "active"}});
    let published = server
        .call(
            Method::POST,
            "/api/realtime/publish",
            Some(ADMIN),
            Some(body.clone()),
        )
        .await;
    assert_eq!(
        (published.status, published.body["matched"].as_u64()),
        (StatusCode::OK, Some(1))
    );
    let (name, data) = event(&mut active).await;
    assert_eq!(
        (name.as_str(), data["record"]["id"].as_str()),
        ("updated", Some("ext-1"))
    );
    let stored = server
        .call(
            Method::GET,
            "/api/collections/posts/records/ext-1",
            None,
            None,
        )
        .await;
    assert_eq!(stored.status, StatusCode::NOT_FOUND, "nothing was stored");
    assert_eq!(
        server
            .call(
                Method::POST,
                "/api/realtime/publish",
                None,
                Some(body.clone())
            )
            .await
            .status,
        StatusCode::UNAUTHORIZED
    );
    let bad = json!({"collection": "posts", "action": "exploded", "record": {}});
    let reply = server
        .call(
            Method::POST,
            "/api/realtime/publish",
            Some(ADMIN),
            Some(bad),
        )
        .await;
    assert!(reply.body["errors"]["action"].is_array());
    let unknown = json!({"collection": "nope", "action": "created", "record": {}});
    let reply = server
        .call(
            Method::POST,
            "/api/realtime/publish",
            Some(ADMIN),
            Some(unknown),
        )
        .await;
    assert!(reply.body["errors"]["collection"].is_array());
}

#[tokio::test]
async fn every_acknowledged_write_survives_kill_9_and_events_flow_again() {
    let mut server = Server::start(COLLECTIONS);
    let writes = futures::future::join_all((0..40).map(|i| {
        let server = &server;
        async move { create(server, "posts", None, json!({"n": i})).await }
    }))
    .await;
    let ids: Vec<String> = writes
        .iter()
        .map(|reply| record(reply)["id"].as_str().unwrap().to_owned())
        .collect();
    for id in &ids[..10] {
        let path = format!("/api/collections/posts/records/{id}");
        assert_eq!(
            server
                .call(Method::PATCH, &path, None, Some(json!({"n": -1})))
                .await
                .status,
            StatusCode::OK
        );
    }
    for id in &ids[10..20] {
        let path = format!("/api/collections/posts/records/{id}");
        assert_eq!(
            server.call(Method::DELETE, &path, None, None).await.status,
            StatusCode::NO_CONTENT
        );
    }
    let channel = server.subscribe(None, "posts", Some("n = -1")).await.body["channel_name"]
        .as_str()
        .unwrap()
        .to_owned();
    server.kill_and_restart();

    let listed = server
        .call(
            Method::GET,
            "/api/collections/posts/records?per_page=500",
            None,
            None,
        )
        .await;
    assert_eq!(
        listed.body["meta"]["total"], 30,
        "every acknowledged write and nothing else"
    );
    let updated = server
        .call(
            Method::GET,
            "/api/collections/posts/records?filter=n%20%3D%20-1",
            None,
            None,
        )
        .await;
    assert_eq!(updated.body["meta"]["total"], 10);

    // The subscription came back with its filter: a matching change reaches it, others do not.
    let (mut socket, _) = connect(&server).await;
    subscribe(&mut socket, &channel, Some("")).await;
    create(&server, "posts", None, json!({"n": 5})).await;
    create(&server, "posts", None, json!({"n": -1, "after": "restart"})).await;
    assert_eq!(event(&mut socket).await.1["record"]["after"], "restart");
    nothing_more(&mut socket).await;
}

#[tokio::test]
async fn metrics_count_what_happened() {
    let server = Server::start(COLLECTIONS);
    let (mut socket, _) = listen(&server, None, "posts", None).await;
    create(&server, "posts", None, json!({"title": "x"})).await;
    event(&mut socket).await;
    let expected = [
        "velo_connections 1",
        "velo_subscriptions{collection=\"posts\"} 1",
        "velo_subscriptions{collection=\"notes\"} 0",
        "velo_events_total 1",
        "velo_deliveries_total 1",
        "velo_match_seconds_count 1",
        "velo_filter_eval_errors_total 0",
    ];
    if let Err(text) = server.wait_for_metrics(&expected).await {
        panic!("missing some of {expected:?} in\n{text}");
    }
}

#[tokio::test]
async fn a_torn_log_tail_is_survived() {
    let mut server = Server::start(COLLECTIONS);
    for n in 0..20 {
        assert_eq!(
            create(&server, "posts", None, json!({"n": n})).await.status,
            StatusCode::CREATED
        );
    }
    server.kill();
    let file = std::fs::OpenOptions::new()
        .write(true)
        .open(server.database_file())
        .unwrap();
    let size = file.metadata().unwrap().len();
    file.set_len(size - 700).expect("the tail is torn off");
    drop(file);
    server.restart();
    let listed = server
        .call(
            Method::GET,
            "/api/collections/posts/records?per_page=500",
            None,
            None,
        )
        .await;
    assert_eq!(
        listed.status,
        StatusCode::OK,
        "the server starts and serves"
    );
    let total = listed.body["meta"]["total"].as_u64().unwrap();
    assert!(
        (1..=20).contains(&total),
        "a prefix of the writes survives: {total}"
    );
    assert!(
        listed.body["data"]
            .as_array()
            .unwrap()
            .iter()
            .all(|r| r["n"].is_number())
    );
    assert_eq!(
        create(&server, "posts", None, json!({"n": 99}))
            .await
            .status,
        StatusCode::CREATED,
        "and takes writes"
    );
}

/// Changes a collection's list rule as the admin.
async fn set_list_rule(server: &Server, collection: &str, rule: &str) {
    let reply = server
        .call(
            Method::PATCH,
            &format!("/api/collections/{collection}"),
            Some(ADMIN),
            Some(json!({"api_rules": {"list": rule}})),
        )
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{:?}", reply.body);
}

#[tokio::test]
async fn a_public_subscription_ends_with_ended_when_its_rule_starts_needing_a_user() {
    let mut server = Server::start(COLLECTIONS);
    let alice = server.token("alice", json!({}), None);
    let guests = server.subscribe(None, "posts", None).await;
    let alices = server.subscribe(Some(&alice), "posts", None).await;
    assert_eq!(
        (
            guests.body["is_public"].clone(),
            alices.body["is_public"].clone()
        ),
        (json!(true), json!(true))
    );
    assert_eq!(
        guests.body["pusher_channel"], guests.body["channel_name"],
        "a public subscription is delivered on its bare channel"
    );
    server.kill_and_restart();
    let (mut socket, _) = connect(&server).await;
    let name = guests.body["channel_name"].as_str().unwrap();
    subscribe(&mut socket, name, None).await;

    set_list_rule(&server, "posts", "owner = @request.auth.id").await;
    let (name_of_event, data) = event(&mut socket).await;
    assert_eq!(
        (name_of_event.as_str(), data),
        (
            "ended",
            json!({"action": "ended", "reason": "rule_changed"})
        )
    );
    // Records only a user may see never reach the public channel: once alice's new (private)
    // subscription has the record, the public socket has had its chance to get it too.
    let (mut alices_socket, _) = listen(&server, Some(&alice), "posts", None).await;
    create(&server, "posts", Some(&alice), json!({"owner": "alice"})).await;
    assert_eq!(event(&mut alices_socket).await.0, "created");
    nothing_more(&mut socket).await;
    for subscribed in [&guests, &alices] {
        let channel = subscribed.body["channel_name"].as_str().unwrap();
        assert_eq!(
            server.ping(None, channel).await.status,
            StatusCode::NOT_FOUND
        );
    }
    server.kill_and_restart();
    let channel = alices.body["channel_name"].as_str().unwrap();
    assert_eq!(
        server.ping(Some(&alice), channel).await.status,
        StatusCode::NOT_FOUND,
        "the end was durable"
    );
    // Subscribing again gives a private subscription that works.
    let again = server.subscribe(Some(&alice), "posts", None).await;
    assert_eq!(again.body["is_public"], false);
    assert_eq!(
        again.body["pusher_channel"],
        format!("private-{}", again.body["channel_name"].as_str().unwrap())
    );
}

#[tokio::test]
async fn a_private_subscription_stays_private_when_its_rule_becomes_public() {
    let mut server = Server::start(COLLECTIONS);
    let alice = server.token("alice", json!({}), None);
    let (mut socket, _) = listen(&server, Some(&alice), "notes", None).await;
    let channel = server.subscribe(Some(&alice), "notes", None).await.body["channel_name"]
        .as_str()
        .unwrap()
        .to_owned();
    set_list_rule(&server, "notes", "").await;
    let created = create(
        &server,
        "notes",
        Some(&alice),
        json!({"owner": "alice", "n": 1}),
    )
    .await;
    assert_eq!(created.status, StatusCode::CREATED, "{:?}", created.body);
    let (action, data) = event(&mut socket).await;
    assert_eq!(
        (action.as_str(), &data["record"]["n"]),
        ("created", &json!(1))
    );

    server.kill_and_restart();
    // Still private after a restart: the channel authorization is signed, and events flow on
    // the private channel.
    let (mut socket, socket_id) = connect(&server).await;
    let private = format!("private-{channel}");
    let auth = server
        .call(
            Method::POST,
            "/api/realtime/auth",
            Some(&alice),
            Some(json!({"socket_id": socket_id, "channel_name": private})),
        )
        .await;
    assert_eq!(auth.status, StatusCode::OK, "{:?}", auth.body);
    let subscribed = subscribe(&mut socket, &private, auth.body["auth"].as_str()).await;
    assert_eq!(
        subscribed["event"],
        "pusher_internal:subscription_succeeded"
    );
    create(
        &server,
        "notes",
        Some(&alice),
        json!({"owner": "alice", "n": 2}),
    )
    .await;
    let (action, data) = event(&mut socket).await;
    assert_eq!(
        (action.as_str(), &data["record"]["n"]),
        ("created", &json!(2))
    );
    // The bare channel carries nothing.
    let (mut bare, _) = connect(&server).await;
    subscribe(&mut bare, &channel, None).await;
    create(
        &server,
        "notes",
        Some(&alice),
        json!({"owner": "alice", "n": 3}),
    )
    .await;
    event(&mut socket).await;
    nothing_more(&mut bare).await;
}

#[tokio::test]
async fn deleting_a_collection_tells_its_sockets() {
    let server = Server::start(COLLECTIONS);
    let (mut socket, _) = listen(&server, None, "posts", None).await;
    create(&server, "posts", None, json!({"n": 1})).await;
    let deleted = server
        .call(Method::DELETE, "/api/collections/posts", Some(ADMIN), None)
        .await;
    assert_eq!(deleted.status, StatusCode::NO_CONTENT);
    assert_eq!(
        event(&mut socket).await.0,
        "created",
        "in order: the event first"
    );
    assert_eq!(
        event(&mut socket).await,
        (
            "ended".to_owned(),
            json!({"action": "ended", "reason": "collection_deleted"})
        )
    );
}

#[tokio::test]
async fn a_socket_is_told_when_its_subscriptions_token_expires() {
    // A short threshold makes the pruner look every second. `exp` is in whole seconds: 5 s
    // leave time to subscribe and listen before the token expires.
    let server = Server::start_with(COLLECTIONS, 4);
    let short = server.token("alice", json!({}), Some(5));
    let (mut socket, _) = listen(&server, Some(&short), "notes", None).await;
    assert_eq!(
        event(&mut socket).await,
        (
            "ended".to_owned(),
            json!({"action": "ended", "reason": "token_expired"})
        )
    );
}

/// 64-bit integers, signed and unsigned, come back exactly: from create, view, list, an event
/// and after kill -9; filters and sorting compare them exactly. Integers beyond 64 bits are
/// refused rather than rounded.
#[tokio::test]
async fn integers_of_64_bits_round_trip_and_compare_exactly() {
    let mut server = Server::start(COLLECTIONS);
    let big = json!({"n": 9007199254740993_u64, "m": -9223372036854775807_i64, "u": u64::MAX});
    let filter = "n = 9007199254740993";
    let (mut exact, _) = listen(&server, None, "posts", Some(filter)).await;
    let (mut above, _) = listen(&server, None, "posts", Some("n > 9007199254740992")).await;

    let neighbour = create(&server, "posts", None, json!({"n": 9007199254740992_u64})).await;
    assert_eq!(neighbour.status, StatusCode::CREATED);
    let created = create(&server, "posts", None, big.clone()).await;
    assert_eq!(created.status, StatusCode::CREATED, "{:?}", created.body);
    let post = record(&created).clone();
    for field in ["n", "m", "u"] {
        assert_eq!(post[field], big[field], "{field} as created");
    }
    let (_, data) = event(&mut exact).await;
    assert_eq!(data["record"], post, "the event carries the exact integers");
    nothing_more(&mut exact).await;
    assert_eq!(event(&mut above).await.1["record"], post);
    nothing_more(&mut above).await;

    let path = format!(
        "/api/collections/posts/records/{}",
        post["id"].as_str().unwrap()
    );
    reads_back_exactly(&server, &path, &post).await;
    server.kill_and_restart();
    reads_back_exactly(&server, &path, &post).await;

    let too_big = server
        .request(Method::POST, "/api/collections/posts/records")
        .header("content-type", "application/json")
        .body(r#"{"a": {"b": [1, 18446744073709551616]}}"#);
    let refused = server.raw(too_big).await;
    assert_eq!(
        refused.status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "{:?}",
        refused.body
    );
    assert!(
        refused.body["errors"]["a.b[1]"].is_array(),
        "{:?}",
        refused.body
    );
}

/// `post` by view, by a list with an exact filter, and first in a list sorted by `-n`.
async fn reads_back_exactly(server: &Server, path: &str, post: &Value) {
    let viewed = server.call(Method::GET, path, None, None).await;
    assert_eq!(record(&viewed), post, "viewed");
    let list = "/api/collections/posts/records?filter=n%20%3D%209007199254740993";
    let listed = server.call(Method::GET, list, None, None).await;
    assert_eq!(
        listed.body["data"],
        json!([post]),
        "listed by an exact filter"
    );
    let list = "/api/collections/posts/records?sort=-n";
    let sorted = server.call(Method::GET, list, None, None).await;
    assert_eq!(
        &sorted.body["data"][0], post,
        "sorted exactly above its neighbour"
    );
}

/// DESIGN.md §15: JSON in UTF-8 only. `charset=utf-8` in any case is accepted; another charset
/// is 415 rather than being read as UTF-8; a content type that is not JSON stays 400 (§9).
#[tokio::test]
async fn json_bodies_in_another_charset_are_refused() {
    let server = Server::start(COLLECTIONS);
    let post = |content_type: &str, body: Vec<u8>| {
        server
            .request(Method::POST, "/api/collections/posts/records")
            .header("content-type", content_type)
            .body(body)
    };
    let utf16: Vec<u8> = r#"{"title": "é"}"#.encode_utf16().flat_map(u16::to_le_bytes).collect();
    let refused = server
        .raw(post("application/json; charset=utf-16", utf16))
        .await;
    assert_eq!(
        refused.status,
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "{:?}",
        refused.body
    );
    assert!(refused.body["message"].as_str().unwrap().contains("utf-16"));
    let latin1 = server
        .raw(post("application/json; charset=ISO-8859-1", b"{}".to_vec()))
        .await;
    assert_eq!(latin1.status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    for accepted in [
        "application/json; charset=UTF-8",
        "application/json;charset=\"utf-8\"",
    ] {
        let created = server
            .raw(post(accepted, r#"{"title": "é"}"#.as_bytes().to_vec()))
            .await;
        assert_eq!(
            created.status,
            StatusCode::CREATED,
            "{accepted}: {:?}",
            created.body
        );
        assert_eq!(record(&created)["title"], "é");
    }
    let not_json = server.raw(post("text/plain", b"{}".to_vec())).await;
    assert_eq!(not_json.status, StatusCode::BAD_REQUEST);
    let auth = server
        .raw(
            server
                .request(Method::POST, "/api/realtime/auth")
                .header("content-type", "application/json; charset=utf-16")
                .body("{}"),
        )
        .await;
    assert_eq!(
        auth.status,
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "{:?}",
        auth.body
    );
}

/// What Velo's own clients do (DESIGN.md §11): ping and end a subscription by its bare UUID,
/// authorize at `/api/broadcasting/auth`, and listen for `server.message`.
#[tokio::test]
async fn velos_own_clients_work_unchanged() {
    let server =
        Server::start_with_env(COLLECTIONS, 300, &[("VELO_EVENT_NAMES", "server.message")]);
    let alice = server.token("alice", json!({}), None);
    let subscribed = server.subscribe(Some(&alice), "notes", None).await;
    let channel = subscribed.body["channel_name"].as_str().unwrap().to_owned();
    let uuid = channel.strip_prefix("velo.realtime.").unwrap().to_owned();
    for name in [
        uuid.clone(),
        channel.clone(),
        format!("private-{channel}"),
        format!("private-encrypted-{channel}"),
    ] {
        assert_eq!(
            server.ping(Some(&alice), &name).await.status,
            StatusCode::OK,
            "{name}"
        );
    }

    let (mut socket, socket_id) = connect(&server).await;
    let private = format!("private-{channel}");
    let auth = server
        .call(
            Method::POST,
            "/api/broadcasting/auth",
            Some(&alice),
            Some(json!({"socket_id": socket_id, "channel_name": private})),
        )
        .await;
    assert_eq!(auth.status, StatusCode::OK, "{:?}", auth.body);
    let not_the_channel = server
        .call(
            Method::POST,
            "/api/broadcasting/auth",
            Some(&alice),
            Some(json!({"socket_id": socket_id, "channel_name": format!("private-{uuid}")})),
        )
        .await;
    assert_eq!(
        not_the_channel.status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "only the channel events go to is signed: {:?}",
        not_the_channel.body
    );
    let subscribed = subscribe(&mut socket, &private, auth.body["auth"].as_str()).await;
    assert_eq!(
        subscribed["event"],
        "pusher_internal:subscription_succeeded"
    );
    create(&server, "notes", Some(&alice), json!({"owner": "alice"})).await;
    let (name, data) = event(&mut socket).await;
    assert_eq!(
        (name.as_str(), &data["action"]),
        ("server.message", &json!("created"))
    );

    assert_eq!(
        server.unsubscribe(Some(&alice), &uuid).await.status,
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        server.ping(Some(&alice), &uuid).await.status,
        StatusCode::NOT_FOUND
    );
}

/// Base64 of 32 bytes: what encrypted channels' keys derive from.
const MASTER_KEY: &str = "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=";

/// `POST /api/realtime/auth` for `channel` on `socket_id`.
async fn authorize(
    server: &Server,
    token: Option<&str>,
    socket_id: &str,
    channel: &str,
) -> support::Reply {
    let body = json!({"socket_id": socket_id, "channel_name": channel});
    server
        .call(Method::POST, "/api/realtime/auth", token, Some(body))
        .await
}

/// An encrypted collection (DESIGN.md §10, §15): a user's subscription is delivered on its
/// `private-encrypted-` channel, whose authorization answers the `shared_secret` that opens
/// each event's sealed data; a guest's stays public and plain; a change of the option ends the
/// private subscriptions; a stored encrypted collection needs the key to start.
#[tokio::test]
async fn an_encrypted_collection_seals_its_private_events() {
    let mut server = Server::start_with_env(
        COLLECTIONS,
        300,
        &[("VELO_ENCRYPTION_MASTER_KEY", MASTER_KEY)],
    );
    let owner_only = "@request.auth.id = owner";
    let created = server
        .create_collection(json!({
            "name": "vault",
            "encrypted": true,
            "api_rules": {"list": owner_only, "view": owner_only, "create": "owner = @request.auth.id"},
        }))
        .await;
    assert_eq!(created.status, StatusCode::CREATED, "{:?}", created.body);
    assert_eq!(created.body["data"]["encrypted"], true);
    let alice = server.token("alice", json!({}), None);
    let bob = server.token("bob", json!({}), None);

    let subscribed = server.subscribe(Some(&alice), "vault", None).await;
    assert_eq!(subscribed.status, StatusCode::OK, "{:?}", subscribed.body);
    let name = subscribed.body["channel_name"].as_str().unwrap().to_owned();
    let channel = format!("private-encrypted-{name}");
    assert_eq!(subscribed.body["is_public"], false);
    assert_eq!(subscribed.body["pusher_channel"], channel.as_str());

    let (mut socket, socket_id) = connect(&server).await;
    let plain_private = authorize(
        &server,
        Some(&alice),
        &socket_id,
        &format!("private-{name}"),
    )
    .await;
    assert_eq!(
        plain_private.status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "only the encrypted channel is signed: {:?}",
        plain_private.body
    );
    let bobs = authorize(&server, Some(&bob), &socket_id, &channel).await;
    assert_eq!(bobs.status, StatusCode::FORBIDDEN, "{:?}", bobs.body);
    let auth = authorize(&server, Some(&alice), &socket_id, &channel).await;
    assert_eq!(auth.status, StatusCode::OK, "{:?}", auth.body);
    let secret = auth.body["shared_secret"].as_str().unwrap().to_owned();
    let joined = subscribe(&mut socket, &channel, auth.body["auth"].as_str()).await;
    assert_eq!(joined["event"], "pusher_internal:subscription_succeeded");

    let written = create(
        &server,
        "vault",
        Some(&alice),
        json!({"owner": "alice", "pin": "4711-classified"}),
    )
    .await;
    assert_eq!(written.status, StatusCode::CREATED, "{:?}", written.body);
    let sealed = frame(&mut socket).await;
    assert_eq!(
        (&sealed["event"], &sealed["channel"]),
        (&json!("created"), &json!(channel))
    );
    let data = sealed["data"].as_str().expect("data is a JSON string");
    assert!(!data.contains("classified"), "{data}");
    assert_eq!(
        support::open_sealed(data, &secret),
        json!({"action": "created", "record": record(&written)})
    );

    // A guest's subscription to an encrypted collection whose rule admits guests is public,
    // and so plain: an encrypted channel would need an authorization a guest cannot get.
    let board = server
        .create_collection(
            json!({"name": "board", "encrypted": true, "api_rules": {"list": "", "create": ""}}),
        )
        .await;
    assert_eq!(board.status, StatusCode::CREATED, "{:?}", board.body);
    let (mut guest, _) = listen(&server, None, "board", None).await;
    create(&server, "board", None, json!({"note": "hello"})).await;
    let (_, payload) = event(&mut guest).await;
    assert_eq!(payload["record"]["note"], "hello");

    // Turning the option off ends the encrypted subscription (told with a sealed `ended`);
    // a new one is private and plain.
    let off = server
        .call(
            Method::PATCH,
            "/api/collections/vault",
            Some(ADMIN),
            Some(json!({"encrypted": false})),
        )
        .await;
    assert_eq!(off.status, StatusCode::OK, "{:?}", off.body);
    assert_eq!(off.body["data"]["encrypted"], false);
    let ended = frame(&mut socket).await;
    assert_eq!(ended["event"], "ended");
    assert_eq!(
        support::open_sealed(ended["data"].as_str().unwrap(), &secret),
        json!({"action": "ended", "reason": "rule_changed"})
    );
    let again = server.subscribe(Some(&alice), "vault", None).await;
    let again_name = again.body["channel_name"].as_str().unwrap();
    assert_eq!(
        again.body["pusher_channel"],
        format!("private-{again_name}")
    );

    // Stored encrypted, the collection stops a start without the key, with a clear message.
    let on = server
        .call(
            Method::PATCH,
            "/api/collections/vault",
            Some(ADMIN),
            Some(json!({"encrypted": true})),
        )
        .await;
    assert_eq!(on.status, StatusCode::OK, "{:?}", on.body);
    server.kill();
    let (status, stderr) = server.failed_start_with_env(&[]);
    assert!(!status.success());
    assert!(
        stderr.contains("`board` is encrypted") || stderr.contains("`vault` is encrypted"),
        "{stderr}"
    );
    assert!(stderr.contains("VELO_ENCRYPTION_MASTER_KEY"), "{stderr}");
    server.restart();
    let (mut socket, socket_id) = connect(&server).await;
    let renewed = server.subscribe(Some(&alice), "vault", None).await;
    let channel = renewed.body["pusher_channel"].as_str().unwrap().to_owned();
    assert!(channel.starts_with("private-encrypted-"), "{channel}");
    let auth = authorize(&server, Some(&alice), &socket_id, &channel).await;
    subscribe(&mut socket, &channel, auth.body["auth"].as_str()).await;
    create(&server, "vault", Some(&alice), json!({"owner": "alice"})).await;
    let sealed = frame(&mut socket).await;
    let secret = auth.body["shared_secret"].as_str().unwrap();
    let payload = support::open_sealed(sealed["data"].as_str().unwrap(), secret);
    assert_eq!(payload["record"]["owner"], "alice");
}

/// Without `VELO_ENCRYPTION_MASTER_KEY` nothing can be sealed: asking for an encrypted
/// collection is a 422 that says what is missing.
#[tokio::test]
async fn an_encrypted_collection_needs_the_master_key() {
    let server = Server::start(COLLECTIONS);
    let refused = server
        .create_collection(json!({"name": "vault", "encrypted": true}))
        .await;
    assert_eq!(refused.status, StatusCode::UNPROCESSABLE_ENTITY);
    let message = refused.body["errors"]["encrypted"][0].as_str().unwrap();
    assert!(message.contains("VELO_ENCRYPTION_MASTER_KEY"), "{message}");
    let patched = server
        .call(
            Method::PATCH,
            "/api/collections/posts",
            Some(ADMIN),
            Some(json!({"encrypted": true})),
        )
        .await;
    assert_eq!(
        patched.status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "{:?}",
        patched.body
    );
    let posts = server
        .call(Method::GET, "/api/collections/posts", Some(ADMIN), None)
        .await;
    assert_eq!(posts.body["data"]["encrypted"], false, "unchanged");
    let plain = server
        .create_collection(json!({"name": "plain", "encrypted": false}))
        .await;
    assert_eq!(plain.status, StatusCode::CREATED, "{:?}", plain.body);
}
