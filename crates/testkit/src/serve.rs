//! A real `kurzdraht serve` child process ([`crate::binary`]) with its stderr in a log file;
//! killed if dropped while still running. Used by the benchmarks and the process-level tests.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// How long [`ServeProcess::stop`] waits after SIGTERM before it gives up.
pub const STOP_TIMEOUT: Duration = Duration::from_secs(15);

/// What went wrong with a serve process (names the agency; an exit carries its log's tail).
#[derive(Debug)]
pub struct ServeError(pub String);

impl std::fmt::Display for ServeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ServeError {}

/// A running `kurzdraht serve --config <node.toml>`.
pub struct ServeProcess {
    agency: String,
    child: Child,
    log: PathBuf,
}

impl ServeProcess {
    /// Starts `kurzdraht serve --config config` for `agency` (a name for messages), its
    /// stderr written to `log` (created anew), stdin and stdout closed; logging at the
    /// binary's default level.
    pub fn spawn(agency: &str, config: &Path, log: PathBuf) -> Result<Self, ServeError> {
        Self::spawn_logging(agency, config, log, None)
    }

    /// [`ServeProcess::spawn`], logging at `level` (`KURZDRAHT_LOG`, no colours) when given.
    pub fn spawn_logging(
        agency: &str,
        config: &Path,
        log: PathBuf,
        level: Option<&str>,
    ) -> Result<Self, ServeError> {
        let log_file = std::fs::File::create(&log)
            .map_err(|e| ServeError(format!("creating {}: {e}", log.display())))?;
        let mut command = Command::new(crate::binary());
        command
            .arg("serve")
            .arg("--config")
            .arg(config)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log_file);
        if let Some(level) = level {
            command.env("KURZDRAHT_LOG", level).env("NO_COLOR", "1");
        }
        let child = command
            .spawn()
            .map_err(|e| ServeError(format!("starting kurzdraht serve for {agency}: {e}")))?;
        Ok(Self {
            agency: agency.to_string(),
            child,
            log,
        })
    }

    /// The process id, as `/proc/<pid>` and `kill` take it.
    pub fn pid(&self) -> String {
        self.child.id().to_string()
    }

    /// The last `n` lines of its log.
    pub fn log_tail(&self, n: usize) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }

    /// Lines of its log containing `needle`, and of those, how many also contain `also`.
    pub fn count_in_log(&self, needle: &str, also: &str) -> (usize, usize) {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let hits: Vec<&str> = text.lines().filter(|l| l.contains(needle)).collect();
        let both = hits.iter().filter(|l| l.contains(also)).count();
        (hits.len(), both)
    }

    /// Whether it exited, and how.
    pub fn exited(&mut self) -> Result<Option<ExitStatus>, ServeError> {
        self.child
            .try_wait()
            .map_err(|e| ServeError(format!("waiting for the {} node: {e}", self.agency)))
    }

    /// An error with its log's tail if it exited.
    pub fn check_running(&mut self) -> Result<(), ServeError> {
        if let Some(status) = self.exited()? {
            return Err(ServeError(format!(
                "the {} node exited ({status}); its log:\n{}",
                self.agency,
                self.log_tail(15)
            )));
        }
        Ok(())
    }

    /// SIGTERM (a graceful stop: in-flight work finishes, the store is flushed), then waits
    /// up to [`STOP_TIMEOUT`]; an error if it is still running then (it is killed when
    /// dropped).
    pub async fn stop(mut self) -> Result<(), ServeError> {
        if self.exited()?.is_none() {
            let _ = Command::new("kill").args(["-TERM", &self.pid()]).status();
            let until = Instant::now() + STOP_TIMEOUT;
            while self.exited()?.is_none() {
                if Instant::now() >= until {
                    return Err(ServeError(format!(
                        "the {} node did not stop within {STOP_TIMEOUT:?} of SIGTERM",
                        self.agency
                    )));
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
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
            eprintln!(
                "---- last lines of {} ----\n{}",
                self.agency,
                self.log_tail(30)
            );
        }
    }
}
