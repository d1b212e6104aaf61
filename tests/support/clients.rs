//! Client folders under `tests/clients/` whose packages (npm, pip) are installed on first use
//! into folders git ignores, and running their programs.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;

/// Installs run one at a time.
static INSTALL: Mutex<()> = Mutex::new(());

/// `tests/clients/<name>`.
pub fn dir(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/clients")
        .join(name)
}

/// The folder `tests/clients/<name>`, its Node packages installed (`npm ci`) on first use.
pub fn with_npm_packages(name: &str) -> PathBuf {
    let dir = dir(name);
    let _one_at_a_time = INSTALL
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    if !dir.join("node_modules").exists() {
        run(
            Command::new("npm")
                .args(["ci", "--no-audit", "--no-fund"])
                .current_dir(&dir),
            "npm ci",
        );
    }
    dir
}

/// The folder `tests/clients/<name>`, its `requirements.txt` installed (pip) into its `.deps`
/// on first use.
pub fn with_pip_packages(name: &str) -> PathBuf {
    let dir = dir(name);
    let _one_at_a_time = INSTALL
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    if !dir.join(".deps").exists() {
        run(
            Command::new("python3")
                .args([
                    "-m",
                    "pip",
                    "install",
                    "--quiet",
                    "--disable-pip-version-check",
                    "--target",
                    ".deps",
                ])
                .args(["-r", "requirements.txt"])
                .current_dir(&dir),
            "pip install",
        );
    }
    dir
}

/// Runs `command` to its end and returns its stdout; panics with both outputs if it fails.
pub fn run(command: &mut Command, what: &str) -> String {
    let output = command
        .output()
        .unwrap_or_else(|error| panic!("{what} cannot start: {error}"));
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "{what} failed ({}):\n{stdout}\n{stderr}",
        output.status
    );
    stdout
}
