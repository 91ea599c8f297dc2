//! The console's accounts, end to end below the web layer: managed with `kurzdraht user …`
//! through a running node's AgencyApi (real gRPC over TLS, an admin token), checked by the
//! node's `Accounts` service as the console calls it in-process, on manual clocks; the
//! stopped store is read offline afterwards (audit chain, raw files).

use kurzdraht_ledger::{AccountRole, Ledger};
use kurzdraht_node::clock::Clock;
use kurzdraht_node::error::reason_of;
use kurzdraht_node::service::accounts::{LOCK_SECS, LOGIN_REFUSED};
use kurzdraht_node::NodeError;
use kurzdraht_proto::v1 as pb;
use kurzdraht_testkit::*;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use tonic::{Code, Status};

const PASSWORD: &str = "korrekt-pferd-batterie-7";
const NEW_PASSWORD: &str = "zweites-Passwort-2026!";
const MINUTE_MS: i64 = 60_000;

/// Gives `agency`'s IT system an admin token (restarts its node; its clock is kept).
async fn make_admin(h: &mut Harness, agency: &str) {
    h.reconfigure(agency, &[("\" }]", "\", admin = true }]")])
        .await;
}

/// The name of `agency`'s IT system (as the audit chain records who acted).
fn it_system(h: &Harness, agency: &str) -> String {
    h.fed.config(agency).expect("config").api_tokens[0]
        .client
        .clone()
}

fn client_toml(h: &Harness, agency: &str) -> PathBuf {
    h.fed.dir.join(agency).join("client.toml")
}

/// Runs the `kurzdraht` binary off the async threads with `stdin` (none: /dev/null, which
/// is no terminal).
async fn kurzdraht(args: Vec<String>, stdin: Option<String>) -> std::process::Output {
    tokio::task::spawn_blocking(move || {
        let mut child = Command::new(binary())
            .args(&args)
            .env("NO_COLOR", "1")
            .stdin(if stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run kurzdraht");
        if let Some(text) = stdin {
            let mut pipe = child.stdin.take().expect("stdin");
            pipe.write_all(text.as_bytes()).expect("write stdin");
        }
        child.wait_with_output().expect("kurzdraht's output")
    })
    .await
    .expect("the kurzdraht process")
}

/// `kurzdraht user ARGS --client <agency's client.toml>`.
async fn user(
    h: &Harness,
    agency: &str,
    args: &[&str],
    stdin: Option<&str>,
) -> std::process::Output {
    let mut all = vec!["user".to_string()];
    all.extend(args.iter().map(|a| a.to_string()));
    all.push("--client".into());
    all.push(client_toml(h, agency).display().to_string());
    kurzdraht(all, stdin.map(str::to_string)).await
}

fn ok(what: &str, o: &std::process::Output) -> serde_json::Value {
    assert!(
        o.status.success(),
        "{what}: {:?}\n{}",
        o.status,
        String::from_utf8_lossy(&o.stderr)
    );
    serde_json::from_slice(&o.stdout).unwrap_or(serde_json::Value::Null)
}

/// The refusal a login got, as the status it would become.
fn refusal<T: std::fmt::Debug>(r: Result<T, NodeError>) -> Status {
    match r {
        Ok(v) => panic!("expected a refusal, the login was accepted: {v:?}"),
        Err(e) => Status::from(e),
    }
}

fn assert_login_refused<T: std::fmt::Debug>(what: &str, r: Result<T, NodeError>) {
    let s = refusal(r);
    assert_eq!(
        (s.code(), reason_of(&s), s.message()),
        (
            Code::Unauthenticated,
            Some("unauthenticated"),
            format!("unauthenticated: {LOGIN_REFUSED}").as_str()
        ),
        "{what}"
    );
}

fn assert_locked<T: std::fmt::Debug>(what: &str, r: Result<T, NodeError>, until_secs: i64) {
    let s = refusal(r);
    assert_eq!(
        (s.code(), reason_of(&s)),
        (Code::ResourceExhausted, Some("account-locked")),
        "{what}: {}",
        s.message()
    );
    let until = kurzdraht_node::clock::format_ms(until_secs * 1000);
    assert!(
        s.message().contains(&until),
        "{what}: {} lacks {until}",
        s.message()
    );
}

/// The account events of the audit chain (`account.*`, `console.*`) with their details.
fn account_events(ledger: &Ledger) -> Vec<(String, String)> {
    ledger
        .audit_entries()
        .expect("audit entries")
        .into_iter()
        .filter(|e| e.event.starts_with("account.") || e.event.starts_with("console."))
        .map(|e| (e.event, e.detail))
        .collect()
}

/// Every file below `dir`, read raw.
fn raw_files(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).expect("read_dir").flatten() {
        let path = entry.path();
        if path.is_dir() {
            out.extend(raw_files(&path));
        } else {
            out.push((path.clone(), std::fs::read(&path).expect("read")));
        }
    }
    out
}

fn holds(files: &[(PathBuf, Vec<u8>)], needle: &[u8]) -> Vec<PathBuf> {
    files
        .iter()
        .filter(|(_, bytes)| bytes.windows(needle.len()).any(|w| w == needle))
        .map(|(p, _)| p.clone())
        .collect()
}

async fn add(h: &Harness, agency: &str, name: &str, role: pb::AccountRole) -> pb::Account {
    h.client(agency)
        .await
        .add_account(pb::AddAccountRequest {
            name: name.into(),
            display_name: format!("Display {name}"),
            role: role as i32,
            password: PASSWORD.into(),
        })
        .await
        .unwrap_or_else(|s| panic!("add {name}: {s:?}"))
        .into_inner()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn accounts_are_managed_with_the_cli_and_the_store_keeps_no_password() {
    let (mut h, _clocks) = start_on_manual_clocks().await;
    make_admin(&mut h, JC).await;
    let by = it_system(&h, JC);

    let added = ok(
        "user add",
        &user(
            &h,
            JC,
            &[
                "add",
                "l.jensen",
                "--role",
                "caseworker",
                "--display-name",
                "Lars Jensen",
                "--password-stdin",
                "--json",
            ],
            Some(&format!("{PASSWORD}\n")),
        )
        .await,
    );
    assert_eq!(added["name"], "l.jensen");
    assert_eq!(added["role"], "ACCOUNT_ROLE_CASEWORKER");
    assert_eq!(added["displayName"], "Lars Jensen");
    let listed = ok("user list", &user(&h, JC, &["list", "--json"], None).await);
    assert_eq!(
        listed["accounts"].as_array().map(Vec::len),
        Some(1),
        "{listed}"
    );
    assert_eq!(listed["accounts"][0]["name"], "l.jensen");
    let text = user(&h, JC, &["list"], None).await;
    ok("user list (text)", &text);
    assert_eq!(
        String::from_utf8_lossy(&text.stdout),
        "l.jensen\tcaseworker\tactive\tLars Jensen\n"
    );

    let accounts = h.node(JC).accounts().clone();
    // positive control: the password added through the CLI logs in
    let view = accounts
        .authenticate("l.jensen", PASSWORD)
        .await
        .expect("log in");
    assert_eq!(view.role, AccountRole::Caseworker);

    ok(
        "user passwd",
        &user(
            &h,
            JC,
            &["passwd", "l.jensen", "--password-stdin"],
            Some(&format!("{NEW_PASSWORD}\r\n")),
        )
        .await,
    );
    assert_login_refused(
        "the old password after passwd",
        accounts.authenticate("l.jensen", PASSWORD).await,
    );
    accounts
        .authenticate("l.jensen", NEW_PASSWORD)
        .await
        .expect("the new password logs in");

    ok(
        "user role",
        &user(&h, JC, &["role", "l.jensen", "data-protection"], None).await,
    );
    assert_eq!(
        accounts.get("l.jensen").expect("get").map(|a| a.role),
        Some(AccountRole::DataProtection),
        "a role change is seen at the next request"
    );
    ok(
        "user disable",
        &user(&h, JC, &["disable", "l.jensen"], None).await,
    );
    assert!(
        accounts
            .get("l.jensen")
            .expect("get")
            .expect("held")
            .disabled
    );
    assert_login_refused(
        "a disabled account with its right password",
        accounts.authenticate("l.jensen", NEW_PASSWORD).await,
    );

    // No terminal and no --password-stdin: a usage error, nothing asked of the node.
    let no_tty = user(&h, JC, &["passwd", "l.jensen"], None).await;
    assert_eq!(no_tty.status.code(), Some(2), "{no_tty:?}");
    assert!(String::from_utf8_lossy(&no_tty.stderr).contains("--password-stdin"));
    // The name in use: ALREADY_EXISTS, exit 4.
    let twice = user(
        &h,
        JC,
        &[
            "add",
            "l.jensen",
            "--role",
            "admin",
            "--display-name",
            "X",
            "--password-stdin",
        ],
        Some(PASSWORD),
    )
    .await;
    assert_eq!(twice.status.code(), Some(4), "{twice:?}");
    assert!(String::from_utf8_lossy(&twice.stderr).contains("account-exists"));
    // Another agency's IT system without an admin token: refused, exit 3.
    let not_admin = user(&h, JA, &["list"], None).await;
    assert_eq!(not_admin.status.code(), Some(3), "{not_admin:?}");
    assert!(String::from_utf8_lossy(&not_admin.stderr).contains("permission-denied"));
    // A short password: exit 4, the field named.
    let short = user(
        &h,
        JC,
        &["passwd", "l.jensen", "--password-stdin"],
        Some("kurz\n"),
    )
    .await;
    assert_eq!(short.status.code(), Some(4), "{short:?}");
    assert!(String::from_utf8_lossy(&short.stderr).contains("invalid password"));

    let data_dir = h.data_dir(JC);
    drop(accounts); // it holds the store open
    h.stop(JC).await;
    let ledger = Ledger::open(&data_dir).expect("open the stopped store");
    ledger.verify_audit().expect("the chain verifies");
    let events = account_events(&ledger);
    let want: Vec<(String, String)> = [
        (
            "account.added",
            format!("account=l.jensen role=caseworker by={by}"),
        ),
        ("console.login", "account=l.jensen".into()),
        (
            "account.password-changed",
            format!("account=l.jensen by={by}"),
        ),
        ("console.login-failed", "account=l.jensen".into()),
        ("console.login", "account=l.jensen".into()),
        (
            "account.role-changed",
            format!("account=l.jensen from=caseworker to=data-protection by={by}"),
        ),
        ("account.disabled", format!("account=l.jensen by={by}")),
        ("console.login-failed", "account=l.jensen".into()),
    ]
    .into_iter()
    .map(|(e, d)| (e.to_string(), d))
    .collect();
    assert_eq!(events, want);
    drop(ledger);

    // The raw files of the store: the audit chain names the account in the clear (positive
    // control: the search works), but neither password nor any hash is there.
    let files = raw_files(&data_dir);
    assert!(
        !holds(&files, b"account=l.jensen").is_empty(),
        "positive control"
    );
    for secret in [
        PASSWORD.as_bytes(),
        NEW_PASSWORD.as_bytes(),
        b"$argon2id",
        b"argon2",
    ] {
        assert_eq!(
            holds(&files, secret),
            Vec::<PathBuf>::new(),
            "{} found on disk",
            String::from_utf8_lossy(secret)
        );
    }
    h.fed.shutdown().await.expect("shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_failed_login_gets_one_answer_whatever_failed() {
    let (mut h, _clocks) = start_on_manual_clocks().await;
    make_admin(&mut h, JC).await;
    add(&h, JC, "l.jensen", pb::AccountRole::Caseworker).await;
    add(&h, JC, "k.petersen", pb::AccountRole::Caseworker).await;
    h.client(JC)
        .await
        .disable_account(pb::DisableAccountRequest {
            name: "k.petersen".into(),
        })
        .await
        .expect("disable");
    let accounts = h.node(JC).accounts().clone();
    let audited_before = h.node(JC).ledger().audit_entries().expect("audit").len();

    // positive control
    let view = accounts
        .authenticate("l.jensen", PASSWORD)
        .await
        .expect("the right password logs in");
    assert_eq!((view.name.as_str(), view.failed_logins), ("l.jensen", 0));
    assert_login_refused(
        "wrong password",
        accounts
            .authenticate("l.jensen", "falsch-falsch-falsch")
            .await,
    );
    // A young person's name typed into the name field, and the password as a name.
    assert_login_refused(
        "unknown name",
        accounts.authenticate("lena.hansen", PASSWORD).await,
    );
    assert_login_refused(
        "no valid name at all",
        accounts
            .authenticate("Lena Hansen 2005-04-12", PASSWORD)
            .await,
    );
    assert_login_refused(
        "disabled account, right password",
        accounts.authenticate("k.petersen", PASSWORD).await,
    );

    let entries = h.node(JC).ledger().audit_entries().expect("audit");
    let details: Vec<(String, String)> = entries[audited_before..]
        .iter()
        .map(|e| (e.event.clone(), e.detail.clone()))
        .collect();
    let want: Vec<(String, String)> = [
        ("console.login", "account=l.jensen"),
        ("console.login-failed", "account=l.jensen"),
        ("console.login-failed", "account=unknown"),
        ("console.login-failed", "account=unknown"),
        ("console.login-failed", "account=k.petersen"),
    ]
    .into_iter()
    .map(|(e, d)| (e.to_string(), d.to_string()))
    .collect();
    assert_eq!(details, want);
    let everything = format!("{entries:?}");
    for typed in ["lena", "Lena", "2005-04-12", PASSWORD, "falsch"] {
        assert!(!everything.contains(typed), "{typed} is in the audit chain");
    }
    h.fed.shutdown().await.expect("shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn five_failed_logins_lock_an_account_for_fifteen_minutes_on_the_nodes_clock() {
    let (mut h, clocks) = start_on_manual_clocks().await;
    make_admin(&mut h, JC).await;
    add(&h, JC, "l.jensen", pb::AccountRole::Caseworker).await;
    let clock = clocks[JC].clone();
    let accounts = h.node(JC).accounts().clone();
    let wrong = "falsch-falsch-falsch";

    // Four failures, a success: the counter starts again, so four more do not lock.
    for round in 0..2 {
        for _ in 0..4 {
            assert_login_refused("wrong", accounts.authenticate("l.jensen", wrong).await);
        }
        let view = accounts
            .authenticate("l.jensen", PASSWORD)
            .await
            .unwrap_or_else(|e| panic!("round {round}: four failures do not lock: {e}"));
        assert_eq!(view.failed_logins, 0);
    }

    // Five lock it: the fifth is answered with the lock.
    for _ in 0..4 {
        assert_login_refused("wrong", accounts.authenticate("l.jensen", wrong).await);
    }
    let locked_at = clock.now_ms();
    let until = locked_at / 1000 + LOCK_SECS;
    assert_locked(
        "the fifth",
        accounts.authenticate("l.jensen", wrong).await,
        until,
    );
    assert_locked(
        "the right password while locked",
        accounts.authenticate("l.jensen", PASSWORD).await,
        until,
    );
    assert_eq!(
        accounts
            .get("l.jensen")
            .expect("get")
            .and_then(|a| a.locked_until_secs),
        Some(until)
    );
    clock.advance(14 * MINUTE_MS);
    assert_locked(
        "after 14 minutes",
        accounts.authenticate("l.jensen", PASSWORD).await,
        until,
    );
    // The lock is in the store: it outlives a restart (the node keeps its clock).
    drop(accounts); // it holds the store open
    h.stop(JC).await;
    h.restart(JC).await;
    let accounts = h.node(JC).accounts().clone();
    assert_locked(
        "after a restart",
        accounts.authenticate("l.jensen", PASSWORD).await,
        until,
    );
    clock.set(locked_at + 15 * MINUTE_MS);
    accounts
        .authenticate("l.jensen", PASSWORD)
        .await
        .expect("open again after 15 minutes");

    let events = account_events(h.node(JC).ledger());
    let locked: Vec<&(String, String)> = events
        .iter()
        .filter(|(e, _)| e == "console.locked")
        .collect();
    assert_eq!(
        locked,
        vec![&(
            "console.locked".to_string(),
            format!("account=l.jensen until={until}")
        )]
    );
    // Attempts while locked change and audit nothing: 13 failures in all, none after the lock.
    let failed = events
        .iter()
        .filter(|(e, _)| e == "console.login-failed")
        .count();
    assert_eq!(failed, 13);
    h.fed.shutdown().await.expect("shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn only_an_admin_token_manages_accounts() {
    let mut h = start().await;
    let mut ja = h.client(JA).await;
    let name = || "l.jensen".to_string();
    expect_refusal(
        "AddAccount",
        ja.add_account(pb::AddAccountRequest {
            name: name(),
            display_name: "Lars Jensen".into(),
            role: pb::AccountRole::Caseworker as i32,
            password: PASSWORD.into(),
        })
        .await,
        Code::PermissionDenied,
        "permission-denied",
    );
    expect_refusal(
        "SetAccountPassword",
        ja.set_account_password(pb::SetAccountPasswordRequest {
            name: name(),
            password: PASSWORD.into(),
        })
        .await,
        Code::PermissionDenied,
        "permission-denied",
    );
    expect_refusal(
        "SetAccountRole",
        ja.set_account_role(pb::SetAccountRoleRequest {
            name: name(),
            role: pb::AccountRole::Admin as i32,
        })
        .await,
        Code::PermissionDenied,
        "permission-denied",
    );
    expect_refusal(
        "DisableAccount",
        ja.disable_account(pb::DisableAccountRequest { name: name() })
            .await,
        Code::PermissionDenied,
        "permission-denied",
    );
    expect_refusal(
        "ListAccounts",
        ja.list_accounts(pb::ListAccountsRequest {}).await,
        Code::PermissionDenied,
        "permission-denied",
    );
    assert!(h.node(JA).ledger().accounts().expect("accounts").is_empty());
    // positive control: the same calls with an admin token
    make_admin(&mut h, JA).await;
    add(&h, JA, "l.jensen", pb::AccountRole::Caseworker).await;
    let mut ja = h.client(JA).await;
    ja.set_account_role(pb::SetAccountRoleRequest {
        name: name(),
        role: pb::AccountRole::Admin as i32,
    })
    .await
    .expect("set the role");
    let listed = ja
        .list_accounts(pb::ListAccountsRequest {})
        .await
        .expect("list")
        .into_inner();
    assert_eq!(listed.accounts.len(), 1);
    assert_eq!(listed.accounts[0].role, pb::AccountRole::Admin as i32);
    h.fed.shutdown().await.expect("shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn invalid_fields_are_refused_naming_the_field_and_leave_no_trace() {
    let mut h = start().await;
    make_admin(&mut h, JC).await;
    add(&h, JC, "l.jensen", pb::AccountRole::Caseworker).await;
    let mut jc = h.client(JC).await;
    let ledger = h.node(JC).ledger().clone();
    let accounts_before = ledger.accounts().expect("accounts");
    let audited_before = ledger.audit_entries().expect("audit").len();
    let valid = || pb::AddAccountRequest {
        name: "k.petersen".into(),
        display_name: "Kirsten Petersen".into(),
        role: pb::AccountRole::Caseworker as i32,
        password: PASSWORD.into(),
    };
    let cases: Vec<(&str, pb::AddAccountRequest)> = vec![
        (
            "name",
            pb::AddAccountRequest {
                name: "Kirsten Petersen".into(),
                ..valid()
            },
        ),
        (
            "name",
            pb::AddAccountRequest {
                name: "".into(),
                ..valid()
            },
        ),
        (
            "name",
            pb::AddAccountRequest {
                name: "k".repeat(65),
                ..valid()
            },
        ),
        (
            "name",
            pb::AddAccountRequest {
                name: "-k".into(),
                ..valid()
            },
        ),
        (
            "display_name",
            pb::AddAccountRequest {
                display_name: "".into(),
                ..valid()
            },
        ),
        (
            "display_name",
            pb::AddAccountRequest {
                display_name: "x".repeat(101),
                ..valid()
            },
        ),
        (
            "display_name",
            pb::AddAccountRequest {
                display_name: "Kirsten\nPetersen".into(),
                ..valid()
            },
        ),
        (
            "password",
            pb::AddAccountRequest {
                password: "elf-zeichen".into(),
                ..valid()
            },
        ),
        (
            "password",
            pb::AddAccountRequest {
                password: "p".repeat(257),
                ..valid()
            },
        ),
        ("role", pb::AddAccountRequest { role: 0, ..valid() }),
        (
            "role",
            pb::AddAccountRequest {
                role: 99,
                ..valid()
            },
        ),
    ];
    for (field, request) in cases {
        let s = expect_refusal(
            field,
            jc.add_account(request).await,
            Code::InvalidArgument,
            "invalid-argument",
        );
        assert!(
            s.message().starts_with(&format!("invalid {field}: ")),
            "{field}: {}",
            s.message()
        );
    }
    let s = expect_refusal(
        "short new password",
        jc.set_account_password(pb::SetAccountPasswordRequest {
            name: "l.jensen".into(),
            password: "elf-zeichen".into(),
        })
        .await,
        Code::InvalidArgument,
        "invalid-argument",
    );
    assert!(
        s.message().starts_with("invalid password: "),
        "{}",
        s.message()
    );
    expect_refusal(
        "an unknown account",
        jc.set_account_password(pb::SetAccountPasswordRequest {
            name: "niemand".into(),
            password: PASSWORD.into(),
        })
        .await,
        Code::NotFound,
        "not-found",
    );
    expect_refusal(
        "a name in use",
        jc.add_account(pb::AddAccountRequest {
            name: "l.jensen".into(),
            ..valid()
        })
        .await,
        Code::AlreadyExists,
        "account-exists",
    );
    assert_eq!(ledger.accounts().expect("accounts"), accounts_before);
    assert_eq!(ledger.audit_entries().expect("audit").len(), audited_before);

    // positive control, at the limits: 12 characters, 100, 64
    let at_limits = jc
        .add_account(pb::AddAccountRequest {
            name: "k".repeat(64),
            display_name: "ä".repeat(100),
            password: "zwölf-zeiche".into(),
            ..valid()
        })
        .await
        .expect("a request at the limits")
        .into_inner();
    assert_eq!(at_limits.name, "k".repeat(64));
    assert_eq!(ledger.accounts().expect("accounts").len(), 2);
    h.fed.shutdown().await.expect("shutdown");
}

/// `kurzdraht user add|passwd NAME` on a terminal, as the operator types it: the password
/// typed twice (shown nowhere: the terminal echoes neither entry); two entries that differ
/// are refused (exit 4) and change nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn on_a_terminal_the_password_is_asked_twice_without_echo() {
    let mut h = start().await;
    make_admin(&mut h, JC).await;
    let client = client_toml(&h, JC).display().to_string();
    let on_tty = |first: &str, second: &str, args: &[&str]| {
        let mut all: Vec<std::ffi::OsString> = vec![first.into(), second.into(), binary().into()];
        all.extend(args.iter().map(Into::into));
        all.push("--client".into());
        all.push(client.clone().into());
        tokio::task::spawn_blocking(move || {
            let args: Vec<&std::ffi::OsStr> = all.iter().map(|a| a.as_os_str()).collect();
            let out =
                run_python_script("tty_password.py", &args, std::time::Duration::from_secs(90));
            (
                printed(&out, "exit").to_string(),
                printed(&out, "transcript").to_string(),
            )
        })
    };
    let add = [
        "user",
        "add",
        "l.jensen",
        "--role",
        "caseworker",
        "--display-name",
        "Lars Jensen",
    ];
    let (exit, transcript) = on_tty(PASSWORD, PASSWORD, &add).await.expect("tty");
    assert_eq!(exit, "0", "{transcript}");
    assert!(
        transcript.contains("account l.jensen added"),
        "{transcript}"
    );
    assert!(!transcript.contains(PASSWORD), "echoed: {transcript}");
    h.node(JC)
        .accounts()
        .authenticate("l.jensen", PASSWORD)
        .await
        .expect("the password typed on the terminal logs in");

    let passwd = ["user", "passwd", "l.jensen"];
    let (exit, transcript) = on_tty(NEW_PASSWORD, "zweites-Passwort-2027!", &passwd)
        .await
        .expect("tty");
    assert_eq!(exit, "4", "{transcript}");
    assert!(transcript.contains("invalid password"), "{transcript}");
    h.node(JC)
        .accounts()
        .authenticate("l.jensen", PASSWORD)
        .await
        .expect("two different entries changed nothing");
    let (exit, transcript) = on_tty(NEW_PASSWORD, NEW_PASSWORD, &passwd)
        .await
        .expect("tty");
    assert_eq!(exit, "0", "{transcript}");
    assert!(!transcript.contains(NEW_PASSWORD), "echoed: {transcript}");
    h.node(JC)
        .accounts()
        .authenticate("l.jensen", NEW_PASSWORD)
        .await
        .expect("the new password logs in");
    h.fed.shutdown().await.expect("shutdown");
}
