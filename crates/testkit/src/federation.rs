//! A whole federation on one machine: the three Segeberg agencies' PKI in a directory and
//! their nodes as real gRPC servers on loopback ports with mutual TLS and sled stores.
//! Each node also serves its metrics on a loopback port (`[metrics] listen` in its node.toml)
//! and its console over HTTPS (`[console] listen`; accounts: [`LocalFederation::add_account`]).
//! Used by `kurzdraht demo` and the end-to-end tests; nothing in it is simulated.
//!
//! A node's ports are reserved for the federation's lifetime (while it is stopped they are
//! bound but refuse connections, so a restart never finds them taken), each node may run on a clock of the caller's choice, and retries back off
//! to at most [`LOCAL_RETRY_MAX_MS`] (a peer back up is reached within that, not after the
//! production ceiling of minutes).

use kurzdraht_client::{connect, AgencyClient, ClientConfig};
use kurzdraht_console::{Console, ConsoleLimits};
use kurzdraht_node::{
    clock::{Clock, SystemClock},
    config::NodeConfig,
    node::Node,
    pki::{self, AgencyFiles},
    server::{serve, Listeners},
    NodeError,
};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tokio::net::TcpSocket;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// The longest a local federation's node waits between two delivery attempts.
pub const LOCAL_RETRY_MAX_MS: u64 = 2_000;
/// How often a local federation's node looks for a newer directory
/// ([`LocalFederation::update_directory`]).
pub const LOCAL_DIRECTORY_POLL_SECS: u64 = 1;

struct Running {
    node: Node,
    stop: oneshot::Sender<()>,
    task: JoinHandle<Result<(), NodeError>>,
    console: JoinHandle<Result<(), kurzdraht_console::ConsoleError>>,
}

/// The ports of one agency's node, reserved for the federation's lifetime: while the node
/// runs they are its listeners; while it is stopped they stay bound but do not listen, so a
/// peer's connection is refused (as by a node that is down) and no other process can take
/// them before the node is back.
struct Ports {
    /// Peer, API, metrics, console.
    addrs: [SocketAddr; 4],
    /// Bound, not listening: held while the node is stopped.
    reserved: Option<[TcpSocket; 4]>,
}

fn reserve(addr: SocketAddr) -> Result<TcpSocket, NodeError> {
    let socket = TcpSocket::new_v4()?;
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    Ok(socket)
}

impl Ports {
    fn bind() -> Result<Self, NodeError> {
        let any: SocketAddr = ([127, 0, 0, 1], 0).into();
        let sockets = [reserve(any)?, reserve(any)?, reserve(any)?, reserve(any)?];
        let addrs = [
            sockets[0].local_addr()?,
            sockets[1].local_addr()?,
            sockets[2].local_addr()?,
            sockets[3].local_addr()?,
        ];
        Ok(Self {
            addrs,
            reserved: Some(sockets),
        })
    }

    /// The node's listeners (peer, API, metrics) and the console's on the reserved ports.
    fn listen(&mut self) -> Result<(Listeners, tokio::net::TcpListener), NodeError> {
        let [peer, api, metrics, console] = match self.reserved.take() {
            Some(s) => s,
            None => [
                reserve(self.addrs[0])?,
                reserve(self.addrs[1])?,
                reserve(self.addrs[2])?,
                reserve(self.addrs[3])?,
            ],
        };
        Ok((
            Listeners {
                peer: peer.listen(1024)?,
                api: api.listen(1024)?,
                metrics: Some(metrics.listen(1024)?),
            },
            console.listen(1024)?,
        ))
    }

    /// Binds the ports again, not listening, once the node's listeners are closed. Best
    /// effort: a socket of the stopped node that closes late is waited for a moment; if a
    /// port cannot be held, the restart binds it anew.
    async fn hold(&mut self) {
        for _ in 0..100 {
            let held: Result<Vec<TcpSocket>, NodeError> =
                self.addrs.iter().map(|a| reserve(*a)).collect();
            if let Ok(sockets) = held {
                if let Ok(sockets) = <[TcpSocket; 4]>::try_from(sockets) {
                    self.reserved = Some(sockets);
                    return;
                }
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        tracing::warn!(ports = ?self.addrs, "could not hold a stopped node's ports");
    }
}

pub struct LocalFederation {
    pub dir: PathBuf,
    pub agencies: Vec<AgencyFiles>,
    running: BTreeMap<String, Running>,
    ports: BTreeMap<String, Ports>,
    /// The clock of each agency's node (the system clock unless a test set another).
    clocks: BTreeMap<String, Arc<dyn Clock>>,
}

impl LocalFederation {
    /// Creates the PKI of the three Segeberg agencies in `dir` and starts all three nodes.
    pub async fn start(dir: &Path) -> Result<Self, NodeError> {
        Self::start_with_clocks(dir, |_| Arc::new(SystemClock)).await
    }

    /// [`LocalFederation::start`] with the clock each agency's node takes its time from
    /// (kept across restarts), so that tests step time instead of waiting for it.
    pub async fn start_with_clocks(
        dir: &Path,
        clock_of: impl Fn(&str) -> Arc<dyn Clock>,
    ) -> Result<Self, NodeError> {
        let mut ports = Vec::new();
        let mut addrs = Vec::new();
        let mut more_addrs = Vec::new();
        for _ in 0..3 {
            let p = Ports::bind()?;
            addrs.push((p.addrs[0], p.addrs[1]));
            more_addrs.push((p.addrs[2], p.addrs[3]));
            ports.push(p);
        }
        let addrs: [(SocketAddr, SocketAddr); 3] = [addrs[0], addrs[1], addrs[2]];
        let mut specs = pki::segeberg(addrs);
        for (spec, (metrics, console)) in specs.iter_mut().zip(more_addrs) {
            spec.metrics_addr = Some(metrics);
            spec.console_addr = Some(console);
        }
        let agencies = pki::init(dir, &specs)?;
        for a in &agencies {
            let toml = std::fs::read_to_string(&a.node_config)?;
            let local = toml
                .replace(
                    "retry_max_ms = 300000",
                    &format!("retry_max_ms = {LOCAL_RETRY_MAX_MS}"),
                )
                .replace(
                    "operator_key = \"../operator.pub\"\n",
                    &format!("operator_key = \"../operator.pub\"\npoll_secs = {LOCAL_DIRECTORY_POLL_SECS}\n"),
                );
            pki::replace_file(&a.node_config, &local)?;
        }
        let clocks = agencies
            .iter()
            .map(|a| (a.id.clone(), clock_of(&a.id)))
            .collect();
        let ports = agencies.iter().map(|a| a.id.clone()).zip(ports).collect();
        let mut fed = Self {
            dir: dir.to_path_buf(),
            agencies,
            running: BTreeMap::new(),
            ports,
            clocks,
        };
        for files in fed.agencies.clone() {
            fed.launch(&files.id)?;
        }
        Ok(fed)
    }

    fn files(&self, agency: &str) -> Result<&AgencyFiles, NodeError> {
        self.agencies
            .iter()
            .find(|a| a.id == agency)
            .ok_or_else(|| NodeError::NotFound(format!("agency {agency}")))
    }

    pub fn config(&self, agency: &str) -> Result<NodeConfig, NodeError> {
        NodeConfig::load(&self.files(agency)?.node_config)
    }

    pub fn client_config(&self, agency: &str) -> Result<ClientConfig, NodeError> {
        Ok(ClientConfig::load(&self.files(agency)?.client_config)?)
    }

    fn launch(&mut self, agency: &str) -> Result<(), NodeError> {
        let config = self.config(agency)?;
        let (listeners, console_listener) = self
            .ports
            .get_mut(agency)
            .ok_or_else(|| NodeError::NotFound(format!("agency {agency}")))?
            .listen()?;
        let clock = self
            .clocks
            .get(agency)
            .cloned()
            .unwrap_or_else(|| Arc::new(SystemClock));
        let node = Node::open_with_clock(&config, clock)?;
        let (stop, stopped) = oneshot::channel();
        let console = Console::new(node.clone(), console_limits(&config));
        let console = tokio::spawn(console.serve(console_listener, config.tls.clone()));
        let task = tokio::spawn(serve(node.clone(), config, listeners, async move {
            let _ = stopped.await;
        }));
        self.running.insert(
            agency.to_string(),
            Running {
                node,
                stop,
                task,
                console,
            },
        );
        Ok(())
    }

    /// The running node of `agency` (to wake its workers after a test moved its clock, or
    /// to look at its state); `None` while it is stopped.
    pub fn node(&self, agency: &str) -> Option<&Node> {
        self.running.get(agency).map(|r| &r.node)
    }

    /// Starts a stopped node again, on the ports it kept.
    pub async fn start_node(&mut self, agency: &str) -> Result<(), NodeError> {
        self.launch(agency)
    }

    /// Stops a node gracefully and waits until its store is closed.
    pub async fn stop_node(&mut self, agency: &str) -> Result<(), NodeError> {
        let Some(r) = self.running.remove(agency) else {
            return Ok(());
        };
        let _ = r.stop.send(());
        let stopped = r
            .task
            .await
            .map_err(|e| NodeError::Internal(format!("node task failed: {e}")))?;
        match r.console.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(NodeError::Internal(format!("console of {agency}: {e}"))),
            Err(e) => return Err(NodeError::Internal(format!("console task failed: {e}"))),
        }
        if let Some(ports) = self.ports.get_mut(agency) {
            ports.hold().await;
        }
        stopped
    }

    pub fn is_running(&self, agency: &str) -> bool {
        self.running
            .get(agency)
            .is_some_and(|r| !r.task.is_finished())
    }

    /// Publishes a new version of the federation's directory — `edit` of the current one,
    /// signed with the federation's operator key — and waits until every running node has
    /// taken it (each looks every [`LOCAL_DIRECTORY_POLL_SECS`]); returns it.
    pub async fn update_directory(
        &self,
        edit: impl FnOnce(&str) -> String,
    ) -> Result<kurzdraht_node::directory::Directory, NodeError> {
        let directory = pki::update_directory(&self.dir, edit)?;
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(15);
        for r in self.running.values() {
            while r.node.directory().version() < directory.version() {
                if tokio::time::Instant::now() > deadline {
                    return Err(NodeError::Internal(format!(
                        "{} did not take directory version {} (still {})",
                        r.node.agency(),
                        directory.version(),
                        r.node.directory().version()
                    )));
                }
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
        }
        Ok(directory)
    }

    /// The console's address of `agency` (`https://127.0.0.1:port`).
    pub fn console_url(&self, agency: &str) -> Result<String, NodeError> {
        let ports = self
            .ports
            .get(agency)
            .ok_or_else(|| NodeError::NotFound(format!("agency {agency}")))?;
        Ok(format!("https://{}", ports.addrs[3]))
    }

    /// An AgencyApi client of `agency`'s IT system.
    pub async fn client(&self, agency: &str) -> Result<AgencyClient, NodeError> {
        Ok(connect(&self.client_config(agency)?).await?)
    }

    /// Stops every node.
    pub async fn shutdown(mut self) -> Result<(), NodeError> {
        let ids: Vec<String> = self.running.keys().cloned().collect();
        for id in ids {
            self.stop_node(&id).await?;
        }
        Ok(())
    }
}

/// The console's limits from a node's configuration (its `[console]` section, else the
/// defaults).
pub fn console_limits(config: &NodeConfig) -> ConsoleLimits {
    ConsoleLimits::of(config.console.as_ref())
}
