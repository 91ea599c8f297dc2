//! `kurzdraht`: the one binary of the project.
//!
//! - `demo`: the Segeberg story on three real local nodes (the README's main command).
//! - `pki …`, `directory …`: the key ceremony and the signed directory (`admin.rs`).
//! - `serve`, `config check`, `health`: running and checking a node.
//! - `consent`, `send`, `status`, `inbox`, `ack`: an agency IT system's client commands.
//! - `audit verify`: offline verification of a node's audit chain (read-only).
//! - `outbox list|extend`: what a stopped node still has to deliver; holding it longer.
//! - `user add|passwd|role|disable|list`: the console's accounts, through the running
//!   node's API with an admin token (`user_commands.rs`).
//! - `restore`: a backup (`kurzdraht backup`) into a stopped node's empty data directory;
//!   the node reconciles with its peers when it starts.
//!
//! Exit codes: 0 success; 1 other failure; 2 usage; 3 refused (consent, policy);
//! 4 invalid input or configuration; 5 node or peer unreachable; 6 not authenticated;
//! 7 a signature or chain does not verify.

#![forbid(unsafe_code)]
// Command-line enums are parsed once; their size does not matter.
#![allow(clippy::large_enum_variant)]

mod admin;
mod commands;
mod consent_commands;
mod demo;
mod exit;
mod message_commands;
mod operator_commands;
mod outbox;
mod output;
mod restore;
mod serve;
mod user_commands;

use clap::{Parser, Subcommand};
use std::path::PathBuf;

#[derive(Parser)]
#[command(
    name = "kurzdraht",
    version,
    about = "Signed, consent-gated case messages between Jobcenter and Jugendämter"
)]
struct Cli {
    /// Log format on stderr.
    #[arg(long, global = true, value_enum, default_value = "text")]
    log_format: LogFormat,
    /// What is logged on stderr: error, warn, info, debug or trace, or a tracing filter such
    /// as `warn,kurzdraht_node=debug`. Without it, the KURZDRAHT_LOG environment variable
    /// decides, else RUST_LOG, else the command's default (info for `serve` and
    /// `demo --verbose`, warn for everything else).
    #[arg(long, global = true, value_name = "LEVEL", value_parser = parse_log_level)]
    log_level: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Play the Kreis Segeberg story on three real nodes in a temporary directory.
    Demo {
        /// Keep the federation in this directory instead of a temporary one.
        #[arg(long)]
        keep: Option<PathBuf>,
        /// Show the nodes' logs on stderr.
        #[arg(long)]
        verbose: bool,
        /// After the story, keep the three nodes running with demo accounts and print their
        /// consoles' addresses and logins (until Ctrl-C).
        #[arg(long)]
        console: bool,
    },
    /// Keys, certificates and tokens: the key ceremony (each command on the host its role
    /// names) and `pki init`, the one-machine shortcut for demos and tests.
    Pki {
        #[command(subcommand)]
        command: admin::PkiCommand,
    },
    /// The federation directory: assemble, sign (federation operator), verify (anyone).
    Directory {
        #[command(subcommand)]
        command: admin::DirectoryCommand,
    },
    /// Run a node.
    Serve {
        #[arg(long)]
        config: PathBuf,
    },
    /// Node configuration.
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
    },
    /// Ask a node's grpc.health.v1 (API port, no token): exit 0 if it serves, 5 if it
    /// cannot be reached, 1 if it answers NOT_SERVING.
    Health {
        /// On the node's host: its node.toml (API address and CA from it).
        #[arg(long)]
        config: Option<PathBuf>,
        /// An IT system's client.toml.
        #[arg(long, env = "KURZDRAHT_CLIENT")]
        client: Option<PathBuf>,
    },
    /// Restore a backup taken with `kurzdraht backup` into the stopped node's data_dir (which
    /// must be empty, unless --replace): checks the archive whole, writes the store, opens it
    /// with the node's data key, verifies its audit chain, and marks it to reconcile with
    /// every peer when the node starts (what the peers delivered since the backup is
    /// received again).
    Restore {
        /// The node's configuration (its data_dir, data key and agency).
        #[arg(long)]
        config: PathBuf,
        /// The archive.
        #[arg(long)]
        from: PathBuf,
        /// Move a store in data_dir aside (to `<data_dir>.before-restore-<unix seconds>`,
        /// nothing is deleted) instead of refusing; refused while the node runs.
        #[arg(long)]
        replace: bool,
    },
    /// The audit chain.
    Audit {
        #[command(subcommand)]
        command: AuditCommand,
    },
    /// What a stopped node still has to deliver, and holding it longer while a peer is down.
    Outbox {
        #[command(subcommand)]
        command: outbox::OutboxCommand,
    },
    #[command(flatten)]
    Client(commands::ClientCommand),
}

#[derive(Subcommand)]
enum ConfigCommand {
    /// Validate a node.toml and prove the node's identity without starting it: every file
    /// it names, the directory's signature and version, the certificate (names this agency,
    /// chains to the CA, valid; tls.key is its key), the signing key (pinned, active).
    /// Exit 0 valid, 4 refused (the message names the key at fault), 5 a peer not reached.
    Check {
        file: PathBuf,
        /// Also reach every peer: mutual TLS to its endpoint and its health.
        #[arg(long)]
        reach_peers: bool,
    },
}

#[derive(Subcommand)]
enum AuditCommand {
    /// Verify a stopped node's audit chain offline.
    Verify {
        /// The node's configuration (its data_dir is verified) ...
        #[arg(long, conflicts_with = "data_dir")]
        config: Option<PathBuf>,
        /// ... or the data directory itself.
        #[arg(long)]
        data_dir: Option<PathBuf>,
        /// Where the copy that is verified is made (default: the temporary directory); it
        /// needs space for one copy of the store.
        #[arg(long)]
        scratch: Option<PathBuf>,
    },
}

/// A `--log-level` value: a level, or a filter that tracing takes. A lone word that is no
/// level (`wran`) is refused: tracing would take it for a target and log nothing else.
fn parse_log_level(value: &str) -> Result<String, String> {
    const LEVELS: [&str; 6] = ["off", "error", "warn", "info", "debug", "trace"];
    let lone_word = !value.contains(['=', ',', '[']);
    if lone_word && !LEVELS.iter().any(|l| l.eq_ignore_ascii_case(value.trim())) {
        return Err(format!(
            "{value:?} is no level ({}) nor a filter such as `warn,kurzdraht_node=debug`",
            LEVELS.join(", ")
        ));
    }
    tracing_subscriber::EnvFilter::builder()
        .parse(value)
        .map(|_| value.to_string())
        .map_err(|e| format!("not a log level or filter: {e}"))
}

/// The environment variables that set the log level, strongest first.
const LOG_LEVEL_VARIABLES: [&str; 2] = ["KURZDRAHT_LOG", "RUST_LOG"];

/// Which log filter applies: `--log-level`, else the first of [`LOG_LEVEL_VARIABLES`]
/// that is set and not empty (read through `env`), else `default`. A variable that is no
/// valid filter is an error naming it (not silently the default).
fn log_filter(
    flag: Option<&str>,
    env: impl Fn(&str) -> Option<String>,
    default: &str,
) -> Result<String, String> {
    if let Some(level) = flag {
        return Ok(level.to_string());
    }
    for var in LOG_LEVEL_VARIABLES {
        if let Some(value) = env(var).filter(|v| !v.trim().is_empty()) {
            parse_log_level(&value).map_err(|e| format!("{var}={value:?}: {e}"))?;
            return Ok(value);
        }
    }
    Ok(default.to_string())
}

fn init_logging(format: LogFormat, directives: &str) -> Result<(), String> {
    let filter = tracing_subscriber::EnvFilter::builder()
        .parse(directives)
        .map_err(|e| e.to_string())?;
    // Colour only for a person at a terminal; a journal or a file gets plain text.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
    Ok(())
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let default_level = match &cli.command {
        Command::Serve { .. } => "info",
        Command::Demo { verbose: true, .. } => "info",
        _ => "warn",
    };
    let logging = log_filter(
        cli.log_level.as_deref(),
        |var| std::env::var(var).ok(),
        default_level,
    )
    .and_then(|directives| init_logging(cli.log_format, &directives));
    if let Err(e) = logging {
        eprintln!("error: log level: {e}");
        return std::process::ExitCode::from(2); // usage, as for a bad argument
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return exit::OTHER;
        }
    };
    let result = runtime.block_on(dispatch(cli.command));
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            exit::code_of(&e)
        }
    }
}

async fn dispatch(command: Command) -> anyhow::Result<std::process::ExitCode> {
    match command {
        Command::Demo { keep, console, .. } => demo::run(keep, console).await,
        Command::Pki { command } => admin::pki(command),
        Command::Directory { command } => admin::directory(command),
        Command::Health { config, client } => admin::health(config, client).await,
        Command::Serve { config } => serve::run(&config).await,
        Command::Config {
            command: ConfigCommand::Check { file, reach_peers },
        } => admin::config_check(&file, reach_peers).await,
        Command::Audit {
            command:
                AuditCommand::Verify {
                    config,
                    data_dir,
                    scratch,
                },
        } => admin::audit_verify(config, data_dir, scratch),
        Command::Outbox { command } => outbox::run(command).await,
        Command::Restore {
            config,
            from,
            replace,
        } => restore::run(&config, &from, replace).await,
        Command::Client(c) => commands::run(c).await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;
    use std::path::Path;

    #[test]
    fn the_log_level_flag_beats_kurzdraht_log_beats_rust_log_beats_the_default() {
        let env = |vars: &'static [(&'static str, &'static str)]| {
            move |name: &str| {
                vars.iter()
                    .find(|(n, _)| *n == name)
                    .map(|(_, v)| v.to_string())
            }
        };
        let both = env(&[("KURZDRAHT_LOG", "debug"), ("RUST_LOG", "error")]);
        assert_eq!(
            log_filter(Some("warn"), both, "info").expect("test"),
            "warn"
        );
        assert_eq!(log_filter(None, both, "info").expect("test"), "debug");
        let rust = env(&[("RUST_LOG", "error")]);
        assert_eq!(log_filter(None, rust, "info").expect("test"), "error");
        // an empty variable is as if unset
        let empty = env(&[("KURZDRAHT_LOG", " "), ("RUST_LOG", "trace")]);
        assert_eq!(log_filter(None, empty, "info").expect("test"), "trace");
        assert_eq!(log_filter(None, env(&[]), "info").expect("test"), "info");
        // an invalid variable is an error naming it, not silently the default
        let bad = env(&[("RUST_LOG", "info,=[")]);
        let e = log_filter(None, bad, "info").unwrap_err();
        assert!(e.starts_with("RUST_LOG="), "{e}");
        // ... but the flag overrides it
        assert_eq!(log_filter(Some("warn"), bad, "info").expect("test"), "warn");
    }

    #[test]
    fn a_log_level_that_is_no_filter_is_a_usage_error() {
        assert!(Cli::try_parse_from(["kurzdraht", "--log-level", "debug", "demo"]).is_ok());
        assert!(Cli::try_parse_from([
            "kurzdraht",
            "demo",
            "--log-level",
            "warn,kurzdraht_node=debug"
        ])
        .is_ok());
        for bad in ["info,=[", "wran", ""] {
            let e = Cli::try_parse_from(["kurzdraht", "demo", "--log-level", bad])
                .err()
                .unwrap_or_else(|| panic!("{bad:?} is refused"));
            assert_eq!(e.kind(), clap::error::ErrorKind::ValueValidation, "{bad:?}");
        }
        assert!(log_filter(None, |_| Some("wran".into()), "info").is_err());
    }

    #[test]
    fn command_line_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    /// The client arguments of a parsed `status` command.
    fn status_args(args: &[&str]) -> (String, commands::ClientArgs) {
        let cli = Cli::try_parse_from(args).expect("the command line parses");
        match cli.command {
            Command::Client(commands::ClientCommand::Status { common, message_id }) => {
                (message_id, common)
            }
            _ => panic!("{args:?} did not parse as the status command"),
        }
    }

    #[test]
    fn client_flags_may_follow_the_subcommand() {
        let (message_id, common) = status_args(&[
            "kurzdraht",
            "status",
            "01a213ff-69f5-777f-adfb-00573ee627ed",
            "--client",
            "c.toml",
            "--json",
        ]);
        assert_eq!(message_id, "01a213ff-69f5-777f-adfb-00573ee627ed");
        assert_eq!(common.client.as_deref(), Some(Path::new("c.toml")));
        assert!(common.json, "--json after the subcommand is taken");
        // control: without the flag, no JSON
        let (_, common) = status_args(&[
            "kurzdraht",
            "status",
            "01a213ff-69f5-777f-adfb-00573ee627ed",
            "--client",
            "c.toml",
        ]);
        assert!(!common.json);
    }
}
