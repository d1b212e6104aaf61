//! Keeps `docs/configuration.md` from drifting: its table, `velo-realtime --help` and the
//! defaults the code resolves must name the same variables with the same defaults, and its
//! complete TOML file must parse and resolve.

use std::collections::BTreeMap;
use std::process::Command;

use velo_realtime::config::{Config, Settings};

const DOC: &str = include_str!("../docs/configuration.md");

/// One row of the documentation's table.
#[derive(Debug)]
struct Row {
    flag: String,
    toml_key: String,
    default: String,
}

/// A cell as text: backticks dropped, spaces trimmed.
fn plain(cell: &str) -> String {
    cell.trim().replace('`', "")
}

/// `env → row` from the table under "## Every setting".
fn documented() -> BTreeMap<String, Row> {
    let table = DOC
        .split("## Every setting")
        .nth(1)
        .expect("docs/configuration.md has a section `## Every setting`");
    let mut rows = BTreeMap::new();
    for line in table.lines().skip_while(|line| !line.starts_with('|')) {
        if !line.starts_with('|') {
            break;
        }
        let cells: Vec<&str> = line.trim_matches('|').split(" | ").collect();
        let env = plain(cells[0]);
        if !env.starts_with("VELO_") {
            continue;
        }
        assert_eq!(cells.len(), 6, "a row has six cells: {line}");
        let row = Row {
            flag: plain(cells[1]),
            toml_key: plain(cells[2]),
            default: plain(cells[3]),
        };
        assert!(
            rows.insert(env.clone(), row).is_none(),
            "{env} is documented twice"
        );
    }
    assert!(
        rows.len() > 40,
        "the table was not found: {} rows",
        rows.len()
    );
    rows
}

/// `env → (flag, default)` from `--help`, and from `serve --help` when the settings are the
/// subcommand's: each option's block names its variable and, in its text, `[default: X]`.
fn help() -> BTreeMap<String, (String, String)> {
    let top = help_of(&["--help"]);
    if !top.is_empty() {
        return top;
    }
    help_of(&["serve", "--help"])
}

fn help_of(args: &[&str]) -> BTreeMap<String, (String, String)> {
    let mut command = Command::new(env!("CARGO_BIN_EXE_velo-realtime"));
    command.args(args);
    for (name, _) in std::env::vars() {
        if name.starts_with("VELO_") {
            command.env_remove(name);
        }
    }
    let output = command.output().expect("velo-realtime --help runs");
    assert!(output.status.success(), "--help fails: {output:?}");
    let text = String::from_utf8(output.stdout).unwrap();
    let mut options = BTreeMap::new();
    let mut blocks = Vec::new();
    for line in text.lines() {
        if line.trim_start().starts_with("--") {
            blocks.push(String::new());
        }
        if let Some(block) = blocks.last_mut() {
            block.push_str(line);
            block.push('\n');
        }
    }
    for block in blocks {
        let Some(start) = block.find("[env: ") else {
            continue;
        };
        let env: String = block[start + 6..]
            .chars()
            .take_while(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || *c == '_')
            .collect();
        let flag = block
            .split_whitespace()
            .next()
            .expect("an option block starts with its flag")
            .to_owned();
        let default = match block.find("[default: ") {
            None => panic!("--help gives no [default: …] for {flag} ({env}):\n{block}"),
            Some(start) => {
                let rest = &block[start + 10..];
                let mut depth = 0;
                let end = rest
                    .char_indices()
                    .find(|&(_, c)| {
                        match c {
                            '[' => depth += 1,
                            ']' if depth == 0 => return true,
                            ']' => depth -= 1,
                            _ => {}
                        }
                        false
                    })
                    .map(|(index, _)| index)
                    .expect("[default: is closed");
                rest[..end].split_whitespace().collect::<Vec<_>>().join(" ")
            }
        };
        assert!(
            options.insert(env.clone(), (flag, default)).is_none(),
            "{env} appears twice in --help"
        );
    }
    options
}

fn resolve(settings: Settings) -> Config {
    settings.resolve().expect("the settings resolve")
}

fn with_redis() -> Settings {
    Settings {
        redis_url: Some("redis://127.0.0.1:1/0".into()),
        ..Settings::default()
    }
}

fn with_pusher_driver() -> Settings {
    toml::from_str(
        "driver = 'pusher'\npusher_host = 'h.example'\npusher_app_id = '1'\n\
         pusher_key = 'k'\npusher_secret = 's'",
    )
    .unwrap()
}

/// What the code resolves for `env` when nothing is set, written as the documentation writes
/// it; `None` for a setting the resolved configuration does not hold (the file's name).
fn resolved_default(env: &str) -> Option<String> {
    let config = resolve(Settings::default());
    let cluster = || resolve(with_redis()).cluster.expect("cluster mode");
    let external = || {
        resolve(with_pusher_driver())
            .external
            .expect("driver pusher")
    };
    let secs = |duration: std::time::Duration| duration.as_secs().to_string();
    let text = match env {
        "VELO_CONFIG" => return None,
        "VELO_BIND" => config.bind.to_string(),
        "VELO_DATA_DIR" => format!("./{}", config.data_dir.display()),
        "VELO_HOOKS_DIR" => match config.hooks_dir {
            // The repository has no `./hooks` (its examples are in `examples/hooks`).
            None => "./hooks when it exists".into(),
            Some(dir) => panic!(
                "no hooks directory is expected here, found {}",
                dir.display()
            ),
        },
        "VELO_ADMIN_TOKEN" => config.admin_token,
        "VELO_JWT_SECRET" => config.jwt_secret,
        "VELO_APP_ID" => config.app_id,
        "VELO_APP_KEY" => config.app_key,
        "VELO_APP_SECRET" => config.app_secret,
        "VELO_CHANNEL_PREFIX" => config.channel_prefix,
        "VELO_CONNECTION_THRESHOLD_SECS" => secs(config.connection_threshold),
        "VELO_CORS_ORIGINS" => match config.cors_origins {
            None => "*".into(),
            Some(origins) => origins.join(","),
        },
        "VELO_MAX_CONNECTIONS" => config.pusher.max_connections.to_string(),
        "VELO_MAX_MESSAGE_BYTES" => config.pusher.max_message_bytes.to_string(),
        "VELO_MAX_CHANNELS_PER_SOCKET" => config.pusher.max_channels_per_socket.to_string(),
        "VELO_SOCKET_QUEUE_FRAMES" => config.pusher.queue_frames.to_string(),
        "VELO_ACTIVITY_TIMEOUT_SECS" => secs(config.pusher.activity_timeout),
        "VELO_PONG_TIMEOUT_SECS" => secs(config.pusher.pong_timeout),
        "VELO_HEADER_READ_TIMEOUT_SECS" => secs(config.header_read_timeout.unwrap()),
        "VELO_BODY_READ_TIMEOUT_SECS" => secs(config.body_read_timeout.unwrap()),
        "VELO_WRITE_STALL_TIMEOUT_SECS" => secs(config.write_stall_timeout.unwrap()),
        "VELO_CACHE_TTL_SECS" => secs(config.pusher.cache_ttl.unwrap()),
        "VELO_CACHE_MAX_CHANNELS" => config.pusher.cache_max_channels.to_string(),
        "VELO_PRESENCE_MAX_MEMBERS" => config.pusher.presence_max_members.to_string(),
        "VELO_PRESENCE_MAX_USER_INFO_BYTES" => {
            config.pusher.presence_max_user_info_bytes.to_string()
        }
        "VELO_ENCRYPTION_MASTER_KEY" => none(config.encryption_master_key.is_none()),
        "VELO_USER_DATA_CLAIMS" => none(config.user_data_claims.is_empty()),
        "VELO_CLIENT_EVENTS" => config.pusher.client_events.to_string(),
        "VELO_MAX_SUBSCRIPTIONS_PER_CLIENT" => config.clients.max_subscriptions.to_string(),
        "VELO_SUBSCRIBE_RATE" => config.clients.subscribes_per_second.to_string(),
        "VELO_MAX_CONNECTIONS_PER_ADDRESS" => config.pusher.max_connections_per_address.to_string(),
        "VELO_TRUSTED_PROXIES" => {
            none(format!("{:?}", config.trusted_proxies) == "TrustedProxies([])")
        }
        "VELO_EVENT_NAMES" => {
            let names: Settings = toml::from_str("event_names = 'actions'").unwrap();
            assert_eq!(
                resolve(names).event_names,
                config.event_names,
                "VELO_EVENT_NAMES"
            );
            "actions".into()
        }
        "VELO_HISTORY_SECS" => secs(config.history.max_age),
        "VELO_HISTORY_EVENTS" => config.history.max_events.to_string(),
        "VELO_HISTORY_BYTES" => config.history.max_bytes.to_string(),
        "VELO_DRIVER" => {
            assert!(config.external.is_none(), "the default driver is builtin");
            "builtin".into()
        }
        "VELO_PUSHER_HOST" => needed_by_pusher("pusher_host", "VELO_PUSHER_HOST"),
        "VELO_PUSHER_APP_ID" => needed_by_pusher("pusher_app_id", "VELO_PUSHER_APP_ID"),
        "VELO_PUSHER_KEY" => needed_by_pusher("pusher_key", "VELO_PUSHER_KEY"),
        "VELO_PUSHER_SECRET" => needed_by_pusher("pusher_secret", "VELO_PUSHER_SECRET"),
        "VELO_PUSHER_PORT" => {
            let https = external().base_url;
            let mut plain = with_pusher_driver();
            plain.pusher_scheme = Some("http".into());
            let http = resolve(plain).external.unwrap().base_url;
            let port = |url: &str| url.rsplit(':').next().unwrap().to_owned();
            format!("{} for https, {} for http", port(&https), port(&http))
        }
        "VELO_PUSHER_SCHEME" => external().base_url.split("://").next().unwrap().into(),
        "VELO_PUSHER_RETRY_WINDOW_SECS" => secs(external().retry_window),
        "VELO_WEBHOOK_URLS" => none(config.webhooks.is_empty()),
        "VELO_WEBHOOK_RETRY_WINDOW_SECS" => secs(config.webhook_retry_window),
        "VELO_REDIS_URL" => none(config.cluster.is_none()),
        "VELO_REDIS_PREFIX" => cluster().prefix,
        "VELO_NODE_ID" => {
            assert_ne!(cluster().node_id, cluster().node_id, "a fresh id each time");
            "random".into()
        }
        "VELO_REDIS_TIMEOUT_MS" => cluster().timeout.as_millis().to_string(),
        "VELO_NODE_HEARTBEAT_MS" => cluster().heartbeat.as_millis().to_string(),
        other => panic!(
            "{other} is new: say in tests/config_docs.rs how its default resolves, and document it"
        ),
    };
    Some(text)
}

fn none(is_unset: bool) -> String {
    assert!(is_unset, "documented as none, but the code sets a value");
    "none".into()
}

/// A driver `pusher` setting without a default: leaving it out is refused, naming it.
fn needed_by_pusher(key: &str, env: &str) -> String {
    let text = format!(
        "driver = 'pusher'\n{}",
        [
            "pusher_host",
            "pusher_app_id",
            "pusher_key",
            "pusher_secret"
        ]
        .iter()
        .filter(|other| **other != key)
        .map(|other| format!("{other} = 'x'\n"))
        .collect::<String>()
    );
    let error = toml::from_str::<Settings>(&text)
        .unwrap()
        .resolve()
        .unwrap_err()
        .to_string();
    assert!(error.contains(env), "{error}");
    "none".into()
}

#[test]
fn every_variable_in_help_is_documented_with_its_default() {
    let documented = documented();
    let help = help();
    assert!(help.len() > 40, "--help lists {} variables", help.len());
    for (env, (flag, default)) in &help {
        let row = documented
            .get(env)
            .unwrap_or_else(|| panic!("{env} ({flag}) is not in docs/configuration.md"));
        assert_eq!(&row.flag, flag, "{env}: the documented flag");
        assert_eq!(
            &row.default, default,
            "{env}: docs/configuration.md and --help disagree on the default"
        );
    }
    for env in documented.keys() {
        assert!(
            help.contains_key(env),
            "{env} is documented but --help does not list it"
        );
    }
}

#[test]
fn documented_defaults_are_what_the_code_resolves() {
    for (env, row) in documented() {
        if let Some(resolved) = resolved_default(&env) {
            assert_eq!(
                row.default, resolved,
                "{env}: docs/configuration.md says one default, the code resolves another"
            );
        }
    }
}

#[test]
fn documented_toml_keys_exist() {
    for (env, row) in documented() {
        if row.toml_key == "–" {
            assert_eq!(env, "VELO_CONFIG", "only the file's own name has no key");
            continue;
        }
        assert_eq!(
            row.toml_key,
            row.flag.trim_start_matches("--").replace('-', "_"),
            "{env}: the TOML key is the flag's name"
        );
        // A value of the wrong type is another error; an unknown key says so.
        let error = toml::from_str::<Settings>(&format!("{} = {{}}", row.toml_key))
            .err()
            .map(|error| error.to_string())
            .unwrap_or_default();
        assert!(
            !error.contains("unknown field"),
            "{env}: `{}` is not a key of the TOML file: {error}",
            row.toml_key
        );
    }
}

#[test]
fn the_complete_file_parses_and_resolves_to_the_defaults() {
    let file = DOC
        .split("## A complete file")
        .nth(1)
        .and_then(|section| section.split("```toml\n").nth(1))
        .and_then(|block| block.split("```").next())
        .expect("docs/configuration.md has a section `## A complete file` with a TOML block");
    let settings: Settings = toml::from_str(file).expect("the complete file parses");
    let mut from_file = resolve(settings);
    let defaults = resolve(Settings::default());
    assert_eq!(
        from_file.data_dir,
        std::path::Path::new(".").join(&defaults.data_dir)
    );
    from_file.data_dir = defaults.data_dir.clone();
    assert_eq!(format!("{from_file:?}"), format!("{defaults:?}"));
}
