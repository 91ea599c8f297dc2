//! `kurzdraht user add|passwd|role|disable|list`: the console's accounts, managed through
//! the running node's AgencyApi with an admin token (the store is the node's while it
//! runs). A password is never a command-line argument: it is read from standard input
//! (`--password-stdin`, one line) or, on a terminal, asked for twice without echo.

use crate::commands::{client_from, ClientArgs};
use crate::exit;
use crate::output::{print_json, rfc3339_of_ms};
use clap::{Subcommand, ValueEnum};
use kurzdraht_node::NodeError;
use kurzdraht_proto::v1 as pb;
use std::io::{BufRead, IsTerminal, Read};
use std::process::ExitCode;

#[derive(Subcommand)]
pub enum UserCommand {
    /// Add an account. The password (12 to 256 characters) is asked for twice on a
    /// terminal, or read from standard input with --password-stdin.
    Add {
        /// The login name: 1 to 64 characters of a-z, 0-9, '.', '_', '-'.
        name: String,
        #[arg(long, value_enum)]
        role: RoleArg,
        /// The name people see (1 to 100 characters, one line).
        #[arg(long)]
        display_name: String,
        /// Read the password from the first line of standard input.
        #[arg(long)]
        password_stdin: bool,
    },
    /// Set an account's password anew (also lifts a lock after failed logins).
    Passwd {
        name: String,
        /// Read the password from the first line of standard input.
        #[arg(long)]
        password_stdin: bool,
    },
    /// Give an account another role.
    Role {
        name: String,
        #[arg(value_enum)]
        role: RoleArg,
    },
    /// Disable an account: it can no longer log in.
    Disable { name: String },
    /// List the accounts.
    List,
}

#[derive(Clone, Copy, ValueEnum)]
pub enum RoleArg {
    Caseworker,
    DataProtection,
    Admin,
}

impl RoleArg {
    fn to_proto(self) -> i32 {
        match self {
            Self::Caseworker => pb::AccountRole::Caseworker as i32,
            Self::DataProtection => pb::AccountRole::DataProtection as i32,
            Self::Admin => pb::AccountRole::Admin as i32,
        }
    }
}

fn role_name(role: i32) -> &'static str {
    match pb::AccountRole::try_from(role) {
        Ok(pb::AccountRole::Caseworker) => "caseworker",
        Ok(pb::AccountRole::DataProtection) => "data-protection",
        Ok(pb::AccountRole::Admin) => "admin",
        _ => "?",
    }
}

/// The longest line `--password-stdin` reads (256 characters of up to 4 bytes, a line end).
const STDIN_LIMIT: u64 = 256 * 4 + 2;

/// Where the password comes from, or why it cannot be had (a usage error).
fn read_password(name: &str, from_stdin: bool) -> anyhow::Result<Result<String, String>> {
    if from_stdin {
        let mut line = String::new();
        std::io::stdin()
            .lock()
            .take(STDIN_LIMIT)
            .read_line(&mut line)?;
        let password = line
            .strip_suffix('\n')
            .map(|l| l.strip_suffix('\r').unwrap_or(l))
            .unwrap_or(&line);
        return Ok(Ok(password.to_string()));
    }
    if !std::io::stdin().is_terminal() {
        return Ok(Err(
            "no terminal to ask for the password on: give it on standard input with --password-stdin"
                .into(),
        ));
    }
    let first = rpassword::prompt_password(format!("New password for {name}: "))?;
    let second = rpassword::prompt_password("The same again: ")?;
    if first != second {
        return Err(NodeError::invalid("password", "the two entries differ").into());
    }
    Ok(Ok(first))
}

/// Runs one `user` command against the node of `common`'s client.toml.
pub(crate) async fn run(common: ClientArgs, command: UserCommand) -> anyhow::Result<ExitCode> {
    // The password first: nothing is asked of the node before it is there.
    let password = match &command {
        UserCommand::Add {
            name,
            password_stdin,
            ..
        }
        | UserCommand::Passwd {
            name,
            password_stdin,
        } => match read_password(name, *password_stdin)? {
            Ok(p) => Some(p),
            Err(usage) => {
                eprintln!("error: {usage}");
                return Ok(ExitCode::from(2));
            }
        },
        _ => None,
    }
    .unwrap_or_default();
    let (mut client, _) = client_from(&common).await?;
    let (account, done) = match command {
        UserCommand::Add {
            name,
            role,
            display_name,
            ..
        } => {
            let request = pb::AddAccountRequest {
                name,
                display_name,
                role: role.to_proto(),
                password,
            };
            (client.add_account(request).await?.into_inner(), "added")
        }
        UserCommand::Passwd { name, .. } => {
            let request = pb::SetAccountPasswordRequest { name, password };
            let answer = client.set_account_password(request).await?;
            (answer.into_inner(), "has a new password")
        }
        UserCommand::Role { name, role } => {
            let request = pb::SetAccountRoleRequest {
                name,
                role: role.to_proto(),
            };
            (
                client.set_account_role(request).await?.into_inner(),
                "has its role",
            )
        }
        UserCommand::Disable { name } => {
            let request = pb::DisableAccountRequest { name };
            (
                client.disable_account(request).await?.into_inner(),
                "is disabled",
            )
        }
        UserCommand::List => {
            let list = client
                .list_accounts(pb::ListAccountsRequest {})
                .await?
                .into_inner();
            if common.json {
                print_json(&list)?;
            } else {
                for a in &list.accounts {
                    println!("{}", line_of(a));
                }
            }
            return Ok(exit::OK);
        }
    };
    if common.json {
        print_json(&account)?;
    } else {
        println!("account {} {done}: {}", account.name, line_of(&account));
    }
    Ok(exit::OK)
}

/// One account as a line: name, role, state, display name.
fn line_of(a: &pb::Account) -> String {
    let state = if a.disabled {
        "disabled".to_string()
    } else if a.locked_until_ms != 0 {
        format!(
            "locked until {}",
            rfc3339_of_ms(a.locked_until_ms).unwrap_or_default()
        )
    } else {
        "active".to_string()
    };
    format!(
        "{}\t{}\t{state}\t{}",
        a.name,
        role_name(a.role),
        a.display_name
    )
}
