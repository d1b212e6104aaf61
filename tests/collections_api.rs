//! The admin API for collections, the committed OpenAPI document, CORS and the system routes,
//! against the real server.

mod support;

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use support::{ADMIN, Server};

#[tokio::test]
async fn the_admin_manages_collections_and_rules() {
    let mut server = Server::start("");
    let alice = server.token("alice", json!({}), Some(3600));

    let created = server
        .create_collection(
            json!({"name": "tasks", "api_rules": {"list": "owner = @request.auth.id", "view": ""}}),
        )
        .await;
    assert_eq!(created.status, StatusCode::CREATED, "{:?}", created.body);
    let data = &created.body["data"];
    let id = data["id"].as_str().unwrap().to_owned();
    assert_eq!(id.len(), 15);
    assert_eq!(data["name"], "tasks");
    assert_eq!(data["api_rules"]["list"], "owner = @request.auth.id");
    assert_eq!(data["api_rules"]["view"], "");
    assert_eq!(
        data["api_rules"]["create"],
        Value::Null,
        "absent is SUPERUSER_ONLY"
    );

    for path in ["/api/collections/tasks", &format!("/api/collections/{id}")] {
        let viewed = server.call(Method::GET, path, Some(ADMIN), None).await;
        assert_eq!(viewed.status, StatusCode::OK);
        assert_eq!(viewed.body["data"]["id"], id.as_str());
    }
    let listed = server
        .call(Method::GET, "/api/collections", Some(ADMIN), None)
        .await;
    assert_eq!(listed.body["data"].as_array().unwrap().len(), 1);

    // Only the admin.
    assert_eq!(
        server
            .call(Method::GET, "/api/collections", None, None)
            .await
            .status,
        StatusCode::UNAUTHORIZED
    );
    let refused = server
        .call(Method::GET, "/api/collections", Some(&alice), None)
        .await;
    assert_eq!(refused.status, StatusCode::FORBIDDEN);
    let refused = server
        .call(
            Method::POST,
            "/api/collections",
            Some(&alice),
            Some(json!({"name": "x"})),
        )
        .await;
    assert_eq!(refused.status, StatusCode::FORBIDDEN);

    // Validation: names, duplicates, rules with positions.
    let bad_name = server.create_collection(json!({"name": "9lives"})).await;
    assert_eq!(bad_name.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(bad_name.body["errors"]["name"].is_array());
    let duplicate = server.create_collection(json!({"name": "tasks"})).await;
    assert_eq!(duplicate.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(
        duplicate.body["errors"]["name"][0]
            .as_str()
            .unwrap()
            .contains("already exists")
    );
    let bad_rule = server
        .create_collection(json!({"name": "other", "api_rules": {"update": "owner = "}}))
        .await;
    assert_eq!(bad_rule.status, StatusCode::UNPROCESSABLE_ENTITY);
    let message = bad_rule.body["errors"]["api_rules.update"][0]
        .as_str()
        .unwrap();
    assert!(message.contains("position 9"), "{message}");
    // Every bad rule is named at once, not only the first.
    let bad_rules = server
        .create_collection(
            json!({"name": "other", "api_rules": {"list": "a = ", "update": "(", "view": "a = 1"}}),
        )
        .await;
    assert_eq!(bad_rules.status, StatusCode::UNPROCESSABLE_ENTITY);
    let named: Vec<&String> = bad_rules.body["errors"]
        .as_object()
        .unwrap()
        .keys()
        .collect();
    assert_eq!(
        named,
        ["api_rules.list", "api_rules.update"],
        "{:?}",
        bad_rules.body
    );
    // `SUPERUSER_ONLY` in any case is the admin-only rule, stored and listed as `null`.
    let lower = server
        .create_collection(
            json!({"name": "lower", "api_rules": {"list": "superuser_only", "view": ""}}),
        )
        .await;
    assert_eq!(lower.status, StatusCode::CREATED, "{:?}", lower.body);
    assert_eq!(lower.body["data"]["api_rules"]["list"], Value::Null);
    assert_eq!(lower.body["data"]["api_rules"]["view"], "");

    // A rule change applies to existing subscriptions: SUPERUSER_ONLY ends alice's.
    let subscribed = server.subscribe(Some(&alice), "tasks", None).await;
    assert_eq!(subscribed.status, StatusCode::OK);
    assert_eq!(subscribed.body["is_public"], false);
    let channel = subscribed.body["channel_name"].as_str().unwrap().to_owned();
    let patched = server
        .call(
            Method::PATCH,
            "/api/collections/tasks",
            Some(ADMIN),
            Some(json!({"name": "todo", "api_rules": {"list": null}})),
        )
        .await;
    assert_eq!(patched.status, StatusCode::OK, "{:?}", patched.body);
    assert_eq!(patched.body["data"]["name"], "todo");
    assert_eq!(patched.body["data"]["api_rules"]["list"], Value::Null);
    assert_eq!(
        patched.body["data"]["api_rules"]["view"], "",
        "absent in the patch: unchanged"
    );
    assert_eq!(
        server.ping(None, &channel).await.status,
        StatusCode::NOT_FOUND
    );
    let bad_patch = server
        .call(
            Method::PATCH,
            "/api/collections/todo",
            Some(ADMIN),
            Some(json!({"api_rules": {"list": "((("}})),
        )
        .await;
    assert_eq!(bad_patch.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(bad_patch.body["errors"]["api_rules.list"].is_array());
    let lower_patch = server
        .call(
            Method::PATCH,
            "/api/collections/todo",
            Some(ADMIN),
            Some(json!({"api_rules": {"delete": " Superuser_Only "}})),
        )
        .await;
    assert_eq!(lower_patch.status, StatusCode::OK, "{:?}", lower_patch.body);
    assert_eq!(lower_patch.body["data"]["api_rules"]["delete"], Value::Null);

    // Collections from the API survive a crash, under their new name.
    server.kill_and_restart();
    let viewed = server
        .call(
            Method::GET,
            &format!("/api/collections/{id}"),
            Some(ADMIN),
            None,
        )
        .await;
    assert_eq!(viewed.body["data"]["name"], "todo");

    // Deleting a collection ends its subscriptions.
    let admin_channel = server.subscribe(Some(ADMIN), "todo", None).await.body["channel_name"]
        .as_str()
        .unwrap()
        .to_owned();
    let deleted = server
        .call(Method::DELETE, "/api/collections/todo", Some(ADMIN), None)
        .await;
    assert_eq!(deleted.status, StatusCode::NO_CONTENT);
    assert_eq!(
        server.ping(None, &admin_channel).await.status,
        StatusCode::NOT_FOUND
    );
    let gone = server
        .call(Method::GET, "/api/collections/todo", Some(ADMIN), None)
        .await;
    assert_eq!(gone.status, StatusCode::NOT_FOUND);
    assert_eq!(
        server.subscribe(None, "todo", None).await.status,
        StatusCode::UNPROCESSABLE_ENTITY
    );
}

/// DESIGN.md §15: unknown keys in a collection body or its `api_rules` are refused, not ignored
/// (a misspelt `list` would leave the list rule `SUPERUSER_ONLY`). Subscribe refuses them too;
/// ping, channel auth and publish ignore them.
#[tokio::test]
async fn requests_racing_a_collection_delete_get_201_or_404_never_503() {
    let server = Server::start(
        "[[collections]]\nname = 'posts'\napi_rules = { list = '', view = '', create = '' }\n",
    );
    let writes = futures::future::join_all((0..200).map(|i| {
        let server = &server;
        async move {
            server
                .call(
                    Method::POST,
                    "/api/collections/posts/records",
                    None,
                    Some(json!({ "n": i })),
                )
                .await
                .status
        }
    }));
    let delete = async {
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        server
            .call(Method::DELETE, "/api/collections/posts", Some(ADMIN), None)
            .await
            .status
    };
    let (statuses, deleted) = tokio::join!(writes, delete);
    assert_eq!(deleted, StatusCode::NO_CONTENT);
    for status in &statuses {
        assert!(
            [StatusCode::CREATED, StatusCode::NOT_FOUND].contains(status),
            "{status}"
        );
    }
    let after = server
        .call(Method::GET, "/api/collections/posts/records", None, None)
        .await;
    assert_eq!(after.status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn mistaken_keys_are_refused_not_ignored() {
    let server = Server::start(
        "[[collections]]\nname = \"posts\"\napi_rules = { list = \"\" }\n\
         [[collections]]\nname = \"secrets\"\n",
    );
    let typo = server
        .create_collection(json!({"name": "tasks", "api_rules": {"lisst": "", "view": ""}}))
        .await;
    assert_eq!(
        typo.status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "{:?}",
        typo.body
    );
    let message = typo.body["errors"]["api_rules.lisst"][0].as_str().unwrap();
    for key in ["`list`", "`view`", "`create`", "`update`", "`delete`"] {
        assert!(message.contains(key), "{message}");
    }
    let gone = server
        .call(Method::GET, "/api/collections/tasks", Some(ADMIN), None)
        .await;
    assert_eq!(gone.status, StatusCode::NOT_FOUND, "nothing was created");

    let top_level = server
        .create_collection(json!({"name": "tasks", "rules": {"list": ""}}))
        .await;
    assert_eq!(top_level.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(
        top_level.body["errors"]["rules"][0]
            .as_str()
            .unwrap()
            .contains("`api_rules`")
    );
    let wrong_type = server
        .create_collection(json!({"name": "tasks", "api_rules": {"list": 5}}))
        .await;
    assert_eq!(wrong_type.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(
        wrong_type.body["errors"]["api_rules.list"].is_array(),
        "{:?}",
        wrong_type.body
    );

    let patch = json!({"api_rules": {"list": null, "veiw": ""}});
    let typo = server
        .call(
            Method::PATCH,
            "/api/collections/posts",
            Some(ADMIN),
            Some(patch),
        )
        .await;
    assert_eq!(typo.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(
        typo.body["errors"]["api_rules.veiw"].is_array(),
        "{:?}",
        typo.body
    );
    let posts = server
        .call(Method::GET, "/api/collections/posts", Some(ADMIN), None)
        .await;
    assert_eq!(
        posts.body["data"]["api_rules"]["list"], "",
        "the patch was not applied"
    );

    let body = json!({"collection": "posts", "fliter": "status = 'active'"});
    let subscribe = server
        .call(Method::POST, "/api/realtime/subscribe", None, Some(body))
        .await;
    assert_eq!(subscribe.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(
        subscribe.body["errors"]["fliter"].is_array(),
        "{:?}",
        subscribe.body
    );

    // An admin's subscription is private, so the channel auth endpoint signs it.
    let channel = server.subscribe(Some(ADMIN), "secrets", None).await.body["channel_name"]
        .as_str()
        .unwrap()
        .to_owned();
    let body = json!({"channel_name": channel, "socket_id": "1.1"});
    let ping = server
        .call(Method::POST, "/api/realtime/ping", Some(ADMIN), Some(body))
        .await;
    assert_eq!(ping.status, StatusCode::OK, "{:?}", ping.body);
    let body =
        json!({"socket_id": "1.1", "channel_name": format!("private-{channel}"), "extra": 1});
    let auth = server
        .call(Method::POST, "/api/realtime/auth", Some(ADMIN), Some(body))
        .await;
    assert_eq!(auth.status, StatusCode::OK, "{:?}", auth.body);
    let body =
        json!({"collection": "posts", "action": "created", "record": {"id": "x"}, "note": 1});
    let publish = server
        .call(
            Method::POST,
            "/api/realtime/publish",
            Some(ADMIN),
            Some(body),
        )
        .await;
    assert_eq!(publish.status, StatusCode::OK, "{:?}", publish.body);
}

#[tokio::test]
async fn the_committed_openapi_document_is_current() {
    let generated: Value = serde_json::from_str(&velo_realtime::api::spec()).unwrap();
    let committed =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/openapi/openapi.json"))
            .expect("openapi/openapi.json is committed");
    let committed: Value = serde_json::from_str(&committed).unwrap();
    assert!(
        generated == committed,
        "openapi/openapi.json is stale: run `cargo run -- openapi > openapi/openapi.json`"
    );
    let server = Server::start("");
    let served = server.call(Method::GET, "/openapi.json", None, None).await;
    assert_eq!(
        served.body, generated,
        "the server serves the same document"
    );
    for path in [
        "/api/realtime/subscribe",
        "/api/realtime/ping",
        "/api/realtime/subscriptions/{channel_name}",
        "/api/collections",
        "/api/collections/{collection}",
        "/health",
        "/metrics",
    ] {
        assert!(generated["paths"][path].is_object(), "{path} is documented");
    }
    let subscribe = &generated["paths"]["/api/realtime/subscribe"]["post"];
    for status in ["200", "400", "401", "403", "413", "415", "422"] {
        assert!(
            subscribe["responses"][status].is_object(),
            "subscribe documents {status}"
        );
    }
    assert!(
        subscribe["responses"]["409"].is_null(),
        "subscribe never answers 409"
    );
    assert_eq!(
        generated["security"],
        json!([{"BearerToken": []}, {}]),
        "credentials are optional unless an operation says otherwise"
    );
}

/// What makes generated clients pleasant (issue 14): a named function per operation, only the
/// statuses an operation answers, plain `application/json`, and an example for every body.
#[test]
fn the_openapi_document_makes_good_clients() {
    let document: Value = serde_json::from_str(&velo_realtime::api::spec()).unwrap();
    let schemas = &document["components"]["schemas"];
    let example_of = |schema: &Value| {
        let named = schema["$ref"]
            .as_str()
            .and_then(|target| target.rsplit('/').next())
            .map(|name| &schemas[name]);
        named.unwrap_or(schema)["example"].clone()
    };
    let mut operation_ids = std::collections::BTreeSet::new();
    for (path, operations) in document["paths"].as_object().unwrap() {
        for (method, operation) in operations.as_object().unwrap() {
            let name = format!("{method} {path}");
            let id = operation["operationId"].as_str();
            assert!(
                id.is_some_and(|id| operation_ids.insert(id.to_owned())),
                "{name} has a unique operationId"
            );
            let contents = operation["requestBody"]["content"]
                .as_object()
                .into_iter()
                .flatten()
                .map(|(media, content)| (format!("{name} request"), media, content));
            let responses = operation["responses"].as_object().unwrap();
            if method == "get" {
                assert!(!responses.contains_key("201"), "{name} lists no 201");
            }
            let replies = responses.iter().flat_map(|(status, response)| {
                let name = format!("{name} {status}");
                response["content"]
                    .as_object()
                    .into_iter()
                    .flatten()
                    .map(move |(media, content)| (name.clone(), media, content))
            });
            for (what, media, content) in contents.chain(replies) {
                // The one exception: Prometheus text, which scrapers read as it is.
                if what == "get /metrics 200" {
                    assert_eq!(media, velo_realtime::metrics::CONTENT_TYPE, "{what}");
                    assert!(
                        example_of(&content["schema"]).is_string(),
                        "{what} has an example"
                    );
                    continue;
                }
                assert!(
                    media == "application/json" || media == "application/x-www-form-urlencoded",
                    "{what}: {media}"
                );
                assert!(
                    example_of(&content["schema"]).is_object(),
                    "{what} has an example"
                );
            }
        }
    }
    let subscribe = example_of(&schemas["SubscribeRequest"]);
    assert_eq!(subscribe["collection"], "posts", "the default collection");
}

#[tokio::test]
async fn system_routes_swagger_and_cors() {
    let server = Server::start("");
    let health = server.call(Method::GET, "/health", None, None).await;
    assert_eq!(
        (health.status, health.body),
        (StatusCode::OK, json!({"status": "ok"}))
    );
    let docs = reqwest::get(format!("{}/docs", server.base)).await.unwrap();
    assert_eq!(docs.status(), StatusCode::OK);
    assert!(
        docs.text().await.unwrap().contains("swagger"),
        "Swagger UI is served"
    );
    let missing = server
        .call(Method::GET, "/api/nothing-here", None, None)
        .await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);
    assert!(missing.body["message"].is_string());

    let preflight = server
        .request(Method::OPTIONS, "/api/realtime/subscribe")
        .header("origin", "https://app.example")
        .header("access-control-request-method", "POST")
        .header(
            "access-control-request-headers",
            "authorization, content-type",
        )
        .send()
        .await
        .unwrap();
    assert!(preflight.status().is_success(), "{}", preflight.status());
    let allowed = preflight.headers()["access-control-allow-origin"]
        .to_str()
        .unwrap();
    assert!(
        allowed == "*" || allowed == "https://app.example",
        "{allowed}"
    );
}
