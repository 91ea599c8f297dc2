//! `kurzdraht serve`: runs a node until SIGTERM or Ctrl-C.

use kurzdraht_node::{config::NodeConfig, server};
use std::path::Path;
use std::process::ExitCode;

/// Loads `config`, binds both listeners and serves until a stop signal.
pub async fn run(config: &Path) -> anyhow::Result<ExitCode> {
    let shutdown = shutdown_signal();
    let config = NodeConfig::load(config)?;
    let listeners = server::Listeners::bind(&config).await?;
    server::run(config, listeners, shutdown).await?;
    Ok(crate::exit::OK)
}

/// SIGTERM or Ctrl-C. The handlers are installed when this is called, before the node loads
/// its configuration and opens its store, so a SIGTERM during start-up is a graceful stop too.
fn shutdown_signal() -> impl std::future::Future<Output = ()> + Send + 'static {
    #[cfg(unix)]
    let term = {
        use tokio::signal::unix::{signal, SignalKind};
        signal(SignalKind::terminate()).ok()
    };
    let ctrl_c = tokio::signal::ctrl_c();
    async move {
        #[cfg(unix)]
        if let Some(mut term) = term {
            tokio::select! {
                _ = ctrl_c => {}
                _ = term.recv() => {}
            }
            return;
        }
        let _ = ctrl_c.await;
    }
}
