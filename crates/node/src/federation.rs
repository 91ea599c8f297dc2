//! A whole federation on one machine: the three Segeberg agencies' PKI in a directory and
//! their nodes as real gRPC servers on loopback ports with mutual TLS and sled stores.
//! Each node also serves its metrics on a loopback port (`[metrics] listen` in its node.toml).
//! Used by `kurzdraht demo` and the end-to-end tests; nothing in it is simulated.

use crate::{
    client::{connect, AgencyClient, ClientConfig},
    config::NodeConfig,
    pki::{self, AgencyFiles},
    server::{run, Listeners},
    NodeError,
};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

struct Running {
    stop: oneshot::Sender<()>,
    task: JoinHandle<Result<(), NodeError>>,
}

pub struct LocalFederation {
    pub dir: PathBuf,
    pub agencies: Vec<AgencyFiles>,
    running: BTreeMap<String, Running>,
}

async fn loopback() -> Result<TcpListener, NodeError> {
    Ok(TcpListener::bind("127.0.0.1:0").await?)
}

impl LocalFederation {
    /// Creates the PKI of the three Segeberg agencies in `dir` and starts all three nodes.
    pub async fn start(dir: &Path) -> Result<Self, NodeError> {
        let mut listeners = Vec::new();
        let mut addrs = Vec::new();
        let mut metrics_addrs = Vec::new();
        for _ in 0..3 {
            let (p, a, m) = (loopback().await?, loopback().await?, loopback().await?);
            addrs.push((p.local_addr()?, a.local_addr()?));
            metrics_addrs.push(m.local_addr()?);
            listeners.push(Listeners {
                peer: p,
                api: a,
                metrics: Some(m),
            });
        }
        let addrs: [(SocketAddr, SocketAddr); 3] = [addrs[0], addrs[1], addrs[2]];
        let mut specs = pki::segeberg(addrs);
        for (spec, m) in specs.iter_mut().zip(metrics_addrs) {
            spec.metrics_addr = Some(m);
        }
        let agencies = pki::init(dir, &specs)?;
        let mut fed = Self {
            dir: dir.to_path_buf(),
            agencies,
            running: BTreeMap::new(),
        };
        for (files, l) in fed.agencies.clone().iter().zip(listeners) {
            fed.launch(&files.id, l)?;
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
        ClientConfig::load(&self.files(agency)?.client_config)
    }

    fn launch(&mut self, agency: &str, listeners: Listeners) -> Result<(), NodeError> {
        let config = self.config(agency)?;
        let (stop, stopped) = oneshot::channel();
        let task = tokio::spawn(run(config, listeners, async move {
            let _ = stopped.await;
        }));
        self.running
            .insert(agency.to_string(), Running { stop, task });
        Ok(())
    }

    /// Starts a stopped node again on its configured addresses.
    pub async fn start_node(&mut self, agency: &str) -> Result<(), NodeError> {
        let config = self.config(agency)?;
        let listeners = Listeners::bind(&config).await?;
        self.launch(agency, listeners)
    }

    /// Stops a node gracefully and waits until its store is closed.
    pub async fn stop_node(&mut self, agency: &str) -> Result<(), NodeError> {
        let Some(r) = self.running.remove(agency) else {
            return Ok(());
        };
        let _ = r.stop.send(());
        r.task
            .await
            .map_err(|e| NodeError::Tls(format!("node task failed: {e}")))?
    }

    pub fn is_running(&self, agency: &str) -> bool {
        self.running
            .get(agency)
            .is_some_and(|r| !r.task.is_finished())
    }

    /// An AgencyApi client of `agency`'s IT system.
    pub async fn client(&self, agency: &str) -> Result<AgencyClient, NodeError> {
        connect(&self.client_config(agency)?).await
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
