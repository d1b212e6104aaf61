//! The command line: settings are taken after a subcommand as before it, and printing into a
//! closed pipe (`velo-realtime openapi | head`) ends quietly instead of panicking.

use std::io::{BufRead, BufReader, Read};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn binary() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_velo-realtime"));
    command
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default());
    command
}

#[test]
fn settings_after_serve_are_taken() {
    let data = tempfile::tempdir().unwrap();
    let mut server = binary()
        .current_dir(data.path())
        .args(["serve", "--bind", "127.0.0.1:0", "--data-dir"])
        .arg(data.path().join("db"))
        .env("RUST_LOG", "info")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = BufReader::new(server.stdout.take().unwrap());
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut listening = false;
    for line in stdout.lines().map_while(Result::ok) {
        if line.contains("listening on http://127.0.0.1:") {
            listening = true;
            break;
        }
        if Instant::now() > deadline {
            break;
        }
    }
    let _ = server.kill();
    let mut stderr = String::new();
    let _ = server.stderr.take().unwrap().read_to_string(&mut stderr);
    let _ = server.wait();
    assert!(listening, "`serve --bind` starts the server: {stderr}");
}

#[test]
fn printing_into_a_closed_pipe_ends_quietly() {
    let mut openapi = binary()
        .arg("openapi")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Gone before it writes (the document fits in a pipe's buffer: a reader that read a
    // little and left would not make the write fail).
    drop(openapi.stdout.take());
    let status = openapi.wait().unwrap();
    let mut stderr = String::new();
    openapi
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(status.success(), "{status:?}: {stderr}");
}
