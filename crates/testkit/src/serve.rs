//! A real `kurzdraht serve` child process ([`crate::binary`]) with its output in a log file,
//! the one handle the benchmarks and the process-level tests use: started by a
//! [`ServeBuilder`] (environment, working directory, an appended log, a unit's command
//! line), waited for ([`ServeProcess::wait_ready`]), stopped with SIGTERM and its exit status
//! ([`ServeProcess::stop_status`]), killed with SIGKILL ([`ServeProcess::kill`]) and started
//! again on the same data directory ([`ServeProcess::restart`]). Killed if dropped while
//! still running; dropped during a panic, it prints its log's tail.

use std::ffi::OsString;
use std::fs::{File, OpenOptions};
use std::future::Future;
use std::io::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// How long [`ServeProcess::stop`] waits after SIGTERM before it gives up.
pub const STOP_TIMEOUT: Duration = Duration::from_secs(15);
/// How long one probe of [`ServeProcess::wait_ready`] may take.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);
/// How often the waits look again.
const POLL: Duration = Duration::from_millis(20);
/// How many log lines an error and a panic show.
const TAIL: usize = 40;

/// What went wrong with a serve process (names the agency; an exit carries its log's tail).
pub struct ServeError(pub String);

/// The message as it is (so that `expect` shows a log's tail line by line).
impl std::fmt::Debug for ServeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::fmt::Display for ServeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ServeError {}

/// How to start a serve process: by default `kurzdraht serve --config <config>` with the
/// caller's environment and working directory, stdin closed, stdout and stderr written to a
/// log file created anew.
#[derive(Clone, Debug)]
pub struct ServeBuilder {
    agency: String,
    program: PathBuf,
    args: Vec<OsString>,
    /// In order: `Some` sets a variable, `None` removes it.
    env: Vec<(OsString, Option<OsString>)>,
    env_clear: bool,
    current_dir: Option<PathBuf>,
    log: PathBuf,
    append: bool,
}

impl ServeBuilder {
    /// Runs `program` instead of [`crate::binary`] (e.g. a test's `CARGO_BIN_EXE_kurzdraht`).
    pub fn program(mut self, program: impl Into<PathBuf>) -> Self {
        self.program = program.into();
        self
    }

    /// Appends arguments after `serve --config <config>`.
    pub fn args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<OsString>,
    {
        self.args.extend(args.into_iter().map(Into::into));
        self
    }

    /// Runs exactly this command line (program and arguments, e.g. a systemd unit's
    /// `ExecStart`) instead of `kurzdraht serve --config <config>`.
    pub fn command_line<S: AsRef<std::ffi::OsStr>>(mut self, argv: &[S]) -> Self {
        let (program, args) = argv.split_first().expect("a command line names a program");
        self.program = PathBuf::from(program);
        self.args = args.iter().map(|a| a.as_ref().to_os_string()).collect();
        self
    }

    /// Sets an environment variable of the process.
    pub fn env(mut self, key: impl Into<OsString>, value: impl Into<OsString>) -> Self {
        self.env.push((key.into(), Some(value.into())));
        self
    }

    /// Removes an environment variable the process would inherit.
    pub fn env_remove(mut self, key: impl Into<OsString>) -> Self {
        self.env.push((key.into(), None));
        self
    }

    /// Starts from an empty environment (then [`ServeBuilder::env`] adds to it).
    pub fn env_clear(mut self) -> Self {
        self.env_clear = true;
        self
    }

    /// Logs at `level` (`KURZDRAHT_LOG`), without colours.
    pub fn log_level(self, level: &str) -> Self {
        self.env("KURZDRAHT_LOG", level).env("NO_COLOR", "1")
    }

    /// The process's working directory.
    pub fn current_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.current_dir = Some(dir.into());
        self
    }

    /// Appends to the log file (created when missing) instead of creating it anew; each
    /// start writes a line `==== <command line>` first.
    pub fn append_log(mut self) -> Self {
        self.append = true;
        self
    }

    /// Starts the process.
    pub fn spawn(self) -> Result<ServeProcess, ServeError> {
        let child = self.launch(self.append)?;
        Ok(ServeProcess { spec: self, child })
    }

    fn launch(&self, append: bool) -> Result<Child, ServeError> {
        let opened = if append {
            OpenOptions::new().create(true).append(true).open(&self.log)
        } else {
            File::create(&self.log)
        };
        let mut out =
            opened.map_err(|e| ServeError(format!("opening {}: {e}", self.log.display())))?;
        let err = out
            .try_clone()
            .map_err(|e| ServeError(format!("cloning the log handle: {e}")))?;
        if append {
            let line: Vec<_> = self.args.iter().map(|a| a.to_string_lossy()).collect();
            writeln!(out, "==== {} {}", self.program.display(), line.join(" "))
                .map_err(|e| ServeError(format!("writing {}: {e}", self.log.display())))?;
        }
        let mut command = Command::new(&self.program);
        command.args(&self.args);
        if self.env_clear {
            command.env_clear();
        }
        for (key, value) in &self.env {
            match value {
                Some(value) => command.env(key, value),
                None => command.env_remove(key),
            };
        }
        if let Some(dir) = &self.current_dir {
            command.current_dir(dir);
        }
        command
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .map_err(|e| {
                ServeError(format!(
                    "starting {} for {}: {e}",
                    self.program.display(),
                    self.agency
                ))
            })
    }
}

/// A running (or ended) `kurzdraht serve`.
pub struct ServeProcess {
    spec: ServeBuilder,
    child: Child,
}

impl ServeProcess {
    /// How to start `kurzdraht serve --config config` for `agency` (a name for messages),
    /// its output written to `log`.
    pub fn builder(agency: &str, config: &Path, log: PathBuf) -> ServeBuilder {
        ServeBuilder {
            agency: agency.to_string(),
            program: crate::binary().to_path_buf(),
            args: vec!["serve".into(), "--config".into(), config.into()],
            env: Vec::new(),
            env_clear: false,
            current_dir: None,
            log,
            append: false,
        }
    }

    /// Starts `kurzdraht serve --config config` for `agency`, its output written to `log`
    /// (created anew); logging at the binary's default level.
    pub fn spawn(agency: &str, config: &Path, log: PathBuf) -> Result<Self, ServeError> {
        Self::builder(agency, config, log).spawn()
    }

    /// [`ServeProcess::spawn`], logging at `level` (`KURZDRAHT_LOG`, no colours) when given.
    pub fn spawn_logging(
        agency: &str,
        config: &Path,
        log: PathBuf,
        level: Option<&str>,
    ) -> Result<Self, ServeError> {
        let builder = Self::builder(agency, config, log);
        match level {
            Some(level) => builder.log_level(level).spawn(),
            None => builder.spawn(),
        }
    }

    /// The name it was started for.
    pub fn agency(&self) -> &str {
        &self.spec.agency
    }

    /// The process id, as `/proc/<pid>` and `kill` take it.
    pub fn pid(&self) -> String {
        self.child.id().to_string()
    }

    /// Its log file.
    pub fn log_path(&self) -> &Path {
        &self.spec.log
    }

    /// Everything in its log (empty if unreadable).
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.spec.log).unwrap_or_default()
    }

    /// The last `n` lines of its log.
    pub fn log_tail(&self, n: usize) -> String {
        let text = self.log_text();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }

    /// The last lines of its log under a heading naming it and the file (for messages).
    fn tail_block(&self) -> String {
        format!(
            "---- last {TAIL} lines of {} ({}) ----\n{}\n----",
            self.spec.agency,
            self.spec.log.display(),
            self.log_tail(TAIL)
        )
    }

    /// Lines of its log containing `needle`, and of those, how many also contain `also`.
    pub fn count_in_log(&self, needle: &str, also: &str) -> (usize, usize) {
        let text = self.log_text();
        let hits: Vec<&str> = text.lines().filter(|l| l.contains(needle)).collect();
        let both = hits.iter().filter(|l| l.contains(also)).count();
        (hits.len(), both)
    }

    /// Whether it exited, and how.
    pub fn exited(&mut self) -> Result<Option<ExitStatus>, ServeError> {
        self.child
            .try_wait()
            .map_err(|e| ServeError(format!("waiting for the {} node: {e}", self.spec.agency)))
    }

    /// An error with its log's tail if it exited.
    pub fn check_running(&mut self) -> Result<(), ServeError> {
        if let Some(status) = self.exited()? {
            return Err(ServeError(format!(
                "the {} node exited ({status}); its log:\n{}",
                self.spec.agency,
                self.log_tail(15)
            )));
        }
        Ok(())
    }

    /// Probes it until `probe` succeeds (each try at most [`PROBE_TIMEOUT`], 20 ms apart) and
    /// returns what the probe gave; an error with its log's tail if it exits first or
    /// `within` passes (naming the probe's last answer).
    pub async fn wait_ready<T, F, Fut>(
        &mut self,
        within: Duration,
        mut probe: F,
    ) -> Result<T, ServeError>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, String>>,
    {
        let started = Instant::now();
        let mut last = String::from("nothing yet");
        loop {
            if let Some(status) = self.exited()? {
                return Err(ServeError(format!(
                    "{} exited with {status} before it was ready\n{}",
                    self.spec.agency,
                    self.tail_block()
                )));
            }
            if started.elapsed() > within {
                return Err(ServeError(format!(
                    "{} was not ready within {within:?} (last: {last})\n{}",
                    self.spec.agency,
                    self.tail_block()
                )));
            }
            match tokio::time::timeout(PROBE_TIMEOUT, probe()).await {
                Ok(Ok(ready)) => return Ok(ready),
                Ok(Err(e)) => last = e,
                Err(_) => last = format!("no answer within {PROBE_TIMEOUT:?}"),
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// [`ServeProcess::wait_ready`] with a TCP connect to `addr` as the probe.
    pub async fn wait_listening(
        &mut self,
        addr: SocketAddr,
        within: Duration,
    ) -> Result<(), ServeError> {
        self.wait_ready(within, || async move {
            tokio::net::TcpStream::connect(addr)
                .await
                .map(drop)
                .map_err(|e| format!("connect to {addr}: {e}"))
        })
        .await
    }

    /// `kill -TERM <pid>`: a graceful stop (in-flight work finishes, the store is flushed).
    pub fn sigterm(&self) -> Result<(), ServeError> {
        let status = Command::new("kill")
            .args(["-TERM", &self.pid()])
            .status()
            .map_err(|e| ServeError(format!("running kill: {e}")))?;
        if !status.success() {
            return Err(ServeError(format!(
                "kill -TERM {} ({}) failed: {status}",
                self.pid(),
                self.spec.agency
            )));
        }
        Ok(())
    }

    /// SIGKILL (`kill -9`: no chance to flush or say goodbye), then waits until the process
    /// is gone; an error if it had already ended.
    pub fn kill(&mut self) -> Result<ExitStatus, ServeError> {
        if let Some(status) = self.exited()? {
            return Err(ServeError(format!(
                "{} is not running (it ended with {status})",
                self.spec.agency
            )));
        }
        // On Unix `Child::kill` sends SIGKILL.
        self.child
            .kill()
            .map_err(|e| ServeError(format!("SIGKILL to {}: {e}", self.spec.agency)))?;
        self.child
            .wait()
            .map_err(|e| ServeError(format!("waiting for the killed {}: {e}", self.spec.agency)))
    }

    /// Waits at most `within` for the process to end by itself; its exit status, or an
    /// error with its log's tail.
    pub async fn wait_exit(&mut self, within: Duration) -> Result<ExitStatus, ServeError> {
        let started = Instant::now();
        loop {
            if let Some(status) = self.exited()? {
                return Ok(status);
            }
            if started.elapsed() > within {
                return Err(ServeError(format!(
                    "{} still runs {within:?} later\n{}",
                    self.spec.agency,
                    self.tail_block()
                )));
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// SIGTERM if still running, then [`ServeProcess::wait_exit`]: its exit status.
    pub async fn stop_status(&mut self, within: Duration) -> Result<ExitStatus, ServeError> {
        if self.exited()?.is_none() {
            if let Err(e) = self.sigterm() {
                // it may have ended between the look and the signal
                if self.exited()?.is_none() {
                    return Err(e);
                }
            }
        }
        self.wait_exit(within).await
    }

    /// SIGTERM, then waits up to [`STOP_TIMEOUT`]; an error if it is still running then (it
    /// is killed when dropped).
    pub async fn stop(mut self) -> Result<(), ServeError> {
        self.stop_status(STOP_TIMEOUT).await.map(drop)
    }

    /// Starts it again as it was started (same command, configuration and so data
    /// directory), appending to its log; an error if it still runs.
    pub fn restart(&mut self) -> Result<(), ServeError> {
        if self.exited()?.is_none() {
            return Err(ServeError(format!(
                "{} is already running",
                self.spec.agency
            )));
        }
        self.child = self.spec.launch(true)?;
        Ok(())
    }
}

impl Drop for ServeProcess {
    /// Kills it if still running; during a panic (a failing test) prints its log's tail.
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        if std::thread::panicking() {
            eprintln!("{}", self.tail_block());
        }
    }
}
