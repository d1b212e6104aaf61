//! The `velo-realtime` command: `serve` (the default), `token`, `openapi`.

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};
use serde_json::{Map, Value};
use velo_realtime::auth::Authenticator;
use velo_realtime::config::Settings;

#[derive(Parser)]
#[command(
    version,
    about = "Velo Realtime: filtered record changes over the Pusher protocol"
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    settings: Settings,
}

#[derive(Subcommand)]
enum Command {
    /// Run the server (the default)
    Serve,
    /// Print a user token signed with the configured JWT secret, for development
    Token {
        /// The user id (`sub` claim; `@request.auth.id`)
        #[arg(long)]
        sub: String,
        /// An extra claim, `key=value` (a JSON value, else a string); repeatable
        #[arg(long = "claim", value_name = "KEY=VALUE")]
        claims: Vec<String>,
        /// Lifetime: a number with s, m, h or d; `0` for a token that never expires
        #[arg(long, default_value = "1h")]
        ttl: String,
    },
    /// Print the OpenAPI document
    Openapi,
}

fn parse_ttl(text: &str) -> anyhow::Result<Option<u64>> {
    if text == "0" {
        return Ok(None);
    }
    let split = text.len() - 1;
    let (number, unit) = text.split_at(split);
    let number: u64 = number
        .parse()
        .with_context(|| format!("invalid --ttl `{text}`"))?;
    let seconds = match unit {
        "s" => number,
        "m" => number * 60,
        "h" => number * 3600,
        "d" => number * 86_400,
        _ => bail!("invalid --ttl `{text}`: use a number followed by s, m, h or d"),
    };
    Ok(Some(seconds))
}

fn parse_claims(claims: &[String]) -> anyhow::Result<Map<String, Value>> {
    claims
        .iter()
        .map(|claim| {
            let (key, value) = claim
                .split_once('=')
                .with_context(|| format!("--claim `{claim}` is not key=value"))?;
            let value = serde_json::from_str(value).unwrap_or_else(|_| Value::String(value.into()));
            Ok((key.to_owned(), value))
        })
        .collect()
}

/// Prints a line on stdout; a reader that went away (`| head`) ends the output quietly.
fn print_line(text: &str) -> anyhow::Result<()> {
    use std::io::Write;
    let mut stdout = std::io::stdout().lock();
    match writeln!(stdout, "{text}").and_then(|()| stdout.flush()) {
        Err(error) if error.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        other => Ok(other?),
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let config = cli.settings.with_file()?.resolve()?;
    match cli.command.unwrap_or(Command::Serve) {
        Command::Openapi => print_line(&velo_realtime::api::spec().to_string())?,
        Command::Token { sub, claims, ttl } => {
            let authenticator = Authenticator::new(&config.admin_token, &config.jwt_secret);
            let token = authenticator.mint(&sub, parse_claims(&claims)?, parse_ttl(&ttl)?);
            print_line(&token)?;
        }
        Command::Serve => {
            tracing_subscriber::fmt()
                .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stdout()))
                .with_env_filter(
                    tracing_subscriber::EnvFilter::try_from_default_env()
                        .unwrap_or_else(|_| "info,poem=warn,sled=warn".into()),
                )
                .init();
            let defaults = config.default_secrets();
            if !defaults.is_empty() {
                if config.bind.ip().is_loopback() {
                    tracing::info!("using development defaults for: {}", defaults.join(", "));
                } else {
                    tracing::warn!(
                        "DANGER: listening on {} with development defaults for: {}. Set them before exposing this server.",
                        config.bind,
                        defaults.join(", ")
                    );
                }
            }
            let listener = tokio::net::TcpListener::bind(config.bind)
                .await
                .with_context(|| format!("cannot listen on {}", config.bind))?;
            velo_realtime::server::run(listener, config, shutdown_signal()).await?;
        }
    }
    Ok(())
}

async fn shutdown_signal() {
    let interrupt = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut terminate =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
                .expect("installing a SIGTERM handler");
        tokio::select! {
            _ = interrupt => {}
            _ = terminate.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = interrupt.await;
    tracing::info!("shutting down");
}
