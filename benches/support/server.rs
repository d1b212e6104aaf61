//! Our own server for the benchmarks: the release binary (or another build) started on
//! 127.0.0.1, port 0, with a fresh temp dir; ready once it logs where it listens, killed when
//! dropped. The caller chooses its `VELO_*` settings. Included by each bench with `#[path]`.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

/// How long a server may take to listen (a cluster node catches up with Redis first).
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// A server of ours, killed when dropped.
pub struct OwnServer {
    child: Child,
    /// `http://127.0.0.1:PORT`
    pub base: String,
    /// Its data dir and config, removed once it is gone.
    _data: tempfile::TempDir,
}

impl OwnServer {
    /// A fresh temp dir for a server's data and config.
    pub fn data_dir() -> Result<tempfile::TempDir, String> {
        tempfile::tempdir().map_err(|error| format!("no temp dir for a server: {error}"))
    }

    /// Starts `command` (the binary and its settings) listening on 127.0.0.1 port 0 with its
    /// data in `data`, and waits until it says where it listens. What it logs after that goes
    /// to stderr, each line led by `name`.
    pub fn start(
        name: &str,
        mut command: Command,
        data: tempfile::TempDir,
    ) -> Result<OwnServer, String> {
        command
            .env("VELO_BIND", "127.0.0.1:0")
            .env("VELO_DATA_DIR", data.path().join("data"))
            .stdout(Stdio::piped());
        let binary = command.get_program().to_string_lossy().into_owned();
        let mut child = command
            .spawn()
            .map_err(|error| format!("{name} ({binary}) did not start: {error}"))?;
        let stdout = child.stdout.take().expect("stdout is piped");
        let (listening, address) = mpsc::channel();
        let prefix = name.to_owned();
        std::thread::spawn(move || {
            let mut lines = BufReader::new(stdout).lines().map_while(Result::ok);
            for line in lines.by_ref() {
                if let Some(address) = line.split("listening on ").nth(1) {
                    let _ = listening.send(address.trim().to_owned());
                    break;
                }
            }
            lines.for_each(|line| eprintln!("[{prefix}] {line}"));
        });
        let mut server = OwnServer {
            child,
            base: String::new(),
            _data: data,
        };
        match address.recv_timeout(START_TIMEOUT) {
            Ok(base) => {
                server.base = base;
                Ok(server)
            }
            Err(_) => {
                let status = server.child.try_wait().ok().flatten();
                Err(match status {
                    Some(status) => {
                        format!("{name} ({binary}) exited ({status}) before it listened")
                    }
                    None => format!("{name} ({binary}) did not listen within {START_TIMEOUT:?}"),
                })
            }
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for OwnServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
