//! Clients generated from the committed `openapi/openapi.json` (issue 14), used against the
//! real server: a Python client from openapi-python-client, whose script must pass
//! `mypy --strict`, and TypeScript types from openapi-typescript, whose file must pass
//! `tsc --strict`; and the document itself through `@redocly/cli lint` (no errors). Packages
//! are installed on first run (npm, pip) into folders git ignores; generated code goes to a
//! temporary folder, or the ignored `tests/clients/openapi/generated/`.

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::json;
use support::Server;
use support::clients::{self, run};

const COLLECTIONS: &str = r#"
[[collections]]
name = "posts"
api_rules = { list = "", view = "", create = "@request.auth.id != ''", update = "@request.auth.id = author", delete = "@request.auth.id = author" }
"#;

fn document() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("openapi/openapi.json")
}

/// Runs `script` with `program` against a fresh server, with alice's token; its output.
fn against_server(command: &mut Command, what: &str) -> String {
    let server = Server::start(COLLECTIONS);
    let alice = server.token("alice", json!({}), Some(3600));
    let output = run(
        command.env("VELO_URL", &server.base).env("ALICE", alice),
        what,
    );
    println!("{output}");
    output
}

#[test]
fn the_generated_python_client_type_checks_and_works() {
    let dir = clients::with_pip_packages("openapi");
    let deps = dir.join(".deps");
    let generated = tempfile::tempdir().expect("a temp dir");
    run(
        Command::new("python3")
            .args(["-m", "openapi_python_client", "generate", "--meta", "none"])
            .arg("--path")
            .arg(document())
            .arg("--output-path")
            .arg(generated.path().join("velo_client"))
            .arg("--config")
            .arg(dir.join("generator.yaml"))
            .env("PYTHONPATH", &deps),
        "openapi-python-client generate",
    );
    let script = dir.join("client.py");
    let path = std::env::join_paths([generated.path(), &deps]).unwrap();
    run(
        Command::new("python3")
            .args(["-m", "mypy", "--strict", "--no-incremental"])
            .arg(&script)
            .env("MYPYPATH", generated.path())
            .env("PYTHONPATH", &path),
        "mypy --strict client.py",
    );
    let output = against_server(
        Command::new("python3")
            .arg(&script)
            .env("PYTHONPATH", &path),
        "client.py",
    );
    assert_eq!(
        output.matches(": ok").count(),
        5,
        "every scenario reported ok:\n{output}"
    );
}

#[test]
fn the_generated_typescript_types_type_check_and_work() {
    let dir = clients::with_npm_packages("openapi");
    let bin = dir.join("node_modules/.bin");
    run(
        Command::new(bin.join("openapi-typescript"))
            .arg(document())
            .args(["--output", "generated/schema.d.ts"])
            .current_dir(&dir),
        "openapi-typescript",
    );
    run(
        Command::new(bin.join("tsc"))
            .args(["--project", "tsconfig.json"])
            .current_dir(&dir),
        "tsc --strict",
    );
    let output = against_server(
        Command::new("node")
            .arg("generated/js/client.js")
            .current_dir(&dir),
        "client.js",
    );
    assert_eq!(
        output.matches(": ok").count(),
        4,
        "every scenario reported ok:\n{output}"
    );
}

#[test]
fn the_document_passes_redocly_lint() {
    let dir = clients::with_npm_packages("openapi");
    let output = run(
        Command::new(dir.join("node_modules/.bin/redocly"))
            .args(["lint", "--format", "summary"])
            .arg(document())
            .env("REDOCLY_TELEMETRY", "off")
            .env("REDOCLY_SUPPRESS_UPDATE_NOTICE", "true")
            .current_dir(&dir),
        "redocly lint",
    );
    println!("{output}");
}
