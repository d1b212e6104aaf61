//! Loading a hooks directory into a [`HookSet`], and reloading it when its files change (polled
//! every second) or on `SIGHUP`. A set that fails to compile, or two files defining the same
//! function, keeps the previous set (logged): a half-written file never takes hooks away.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Weak};
use std::time::{Duration, SystemTime};

use rhai::{AST, Engine};

use super::{Hook, HookSet, Hooks};

/// How often the directory is looked at for changed files.
const POLL: Duration = Duration::from_secs(1);

/// What a file looked like when it was loaded: a changed stamp means reload.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Stamp {
    path: PathBuf,
    modified: Option<SystemTime>,
    len: u64,
}

/// The `*.rhai` files of `dir`, by name (none when it cannot be read).
pub fn stamps(dir: &Path) -> Vec<Stamp> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut stamps: Vec<Stamp> = entries
        .filter_map(Result::ok)
        .map(|entry| entry.path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "rhai"))
        .filter_map(|path| {
            let meta = std::fs::metadata(&path).ok()?;
            meta.is_file().then(|| Stamp {
                modified: meta.modified().ok(),
                len: meta.len(),
                path,
            })
        })
        .collect();
    stamps.sort_by(|a, b| a.path.cmp(&b.path));
    stamps
}

/// Compiles every `*.rhai` file of `dir` into one set. Each hook must take one parameter
/// (its context), and no function may be defined in two files.
pub fn compile(engine: &Engine, dir: &Path) -> Result<HookSet, String> {
    let stamps = stamps(dir);
    let mut merged = AST::empty();
    let mut defined_in: HashMap<String, PathBuf> = HashMap::new();
    let mut defined = 0;
    for stamp in &stamps {
        let path = &stamp.path;
        let text = std::fs::read_to_string(path)
            .map_err(|error| format!("{}: {error}", path.display()))?;
        let ast = engine
            .compile(&text)
            .map_err(|error| format!("{}: {error}", path.display()))?;
        for function in ast.iter_functions() {
            let name = function.name.to_owned();
            if let Some(other) = defined_in.get(&name)
                && other != path
            {
                return Err(format!(
                    "function `{name}` is defined in both {} and {}",
                    other.display(),
                    path.display()
                ));
            }
            if let Some(hook) = Hook::parse(&name) {
                if function.params.len() != 1 {
                    return Err(format!(
                        "{}: `{name}` must take one parameter, its context",
                        path.display()
                    ));
                }
                defined |= hook.bit();
            }
            defined_in.insert(name, path.clone());
        }
        merged = merged.merge(&ast);
    }
    Ok(HookSet {
        ast: merged,
        defined,
        stamps,
    })
}

/// Reloads `hooks` from its directory when a file changes, and on `SIGHUP`, until the hooks
/// are dropped.
pub fn watch(hooks: &Arc<Hooks>, dir: PathBuf) {
    let hooks: Weak<Hooks> = Arc::downgrade(hooks);
    tokio::spawn(async move {
        #[cfg(unix)]
        let mut hangup = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
        {
            Ok(signal) => Some(signal),
            Err(error) => {
                tracing::warn!(%error, "hooks: cannot listen for SIGHUP; changes are still polled");
                None
            }
        };
        let mut poll = tokio::time::interval(POLL);
        poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // The stamps of a set that failed, so that it is reported once, not every second.
        let mut failed: Option<Vec<Stamp>> = None;
        loop {
            #[cfg(unix)]
            let forced = tokio::select! {
                _ = poll.tick() => false,
                Some(()) = async {
                    match hangup.as_mut() {
                        Some(signal) => signal.recv().await,
                        None => std::future::pending().await,
                    }
                } => true,
            };
            #[cfg(not(unix))]
            let forced = {
                poll.tick().await;
                false
            };
            let Some(hooks) = hooks.upgrade() else {
                return;
            };
            let now = stamps(&dir);
            if !forced && (now == hooks.set.load().stamps || failed.as_ref() == Some(&now)) {
                continue;
            }
            match compile(&hooks.compiler, &dir) {
                Ok(set) => {
                    let why = if forced { "SIGHUP" } else { "files changed" };
                    tracing::info!(dir = %dir.display(), hooks = ?set.names(), why, "hooks reloaded");
                    hooks.set.store(Arc::new(set));
                    failed = None;
                }
                Err(error) => {
                    tracing::error!(dir = %dir.display(), %error, "hooks not reloaded: the previous set stays");
                    failed = Some(now);
                }
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::super::sandbox;
    use super::*;

    #[test]
    fn the_example_hooks_compile_and_define_every_hook() {
        let engine = sandbox::engine(sandbox::Kind::After);
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/hooks");
        let set = compile(&engine, &dir).expect("the examples compile");
        assert_eq!(set.names(), Hook::ALL.map(Hook::name));
        let slug: String = engine
            .call_fn(
                &mut rhai::Scope::new(),
                &set.ast,
                "slug",
                ("Hello Big World",),
            )
            .unwrap();
        assert_eq!(slug, "hello-big-world");
    }

    #[test]
    fn a_hook_takes_its_context_and_nothing_else() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("a.rhai"), "fn record_created(ctx, more) {}").unwrap();
        let engine = sandbox::engine(sandbox::Kind::After);
        let error = compile(&engine, dir.path()).err().unwrap();
        assert!(error.contains("must take one parameter"), "{error}");
        // Files other than `*.rhai` are not read.
        std::fs::write(dir.path().join("a.rhai"), "fn record_created(ctx) {}").unwrap();
        std::fs::write(dir.path().join("notes.txt"), "fn {").unwrap();
        let set = compile(&engine, dir.path()).unwrap();
        assert_eq!(set.names(), ["record_created"]);
    }
}
