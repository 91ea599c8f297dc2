//! `kurzdraht serve`: runs a node (and its console, when `[console]` is configured) until
//! SIGTERM or Ctrl-C.

use anyhow::Context;
use kurzdraht_console::{Console, ConsoleLimits};
use kurzdraht_node::{config::NodeConfig, server, Node};
use std::path::Path;
use std::process::ExitCode;

/// Loads `config`, binds the listeners and serves until a stop signal.
pub async fn run(config: &Path) -> anyhow::Result<ExitCode> {
    let shutdown = shutdown_signal();
    let config = NodeConfig::load(config)?;
    let listeners = server::Listeners::bind(&config).await?;
    let console_listener = match &config.console {
        Some(c) => Some(
            tokio::net::TcpListener::bind(c.listen)
                .await
                .with_context(|| format!("console.listen: cannot listen on {}", c.listen))?,
        ),
        None => None,
    };
    let node = Node::open(&config)?;
    let console = console_listener.map(|listener| {
        let console = Console::new(node.clone(), ConsoleLimits::of(config.console.as_ref()));
        tokio::spawn(console.serve(listener, config.tls.clone()))
    });
    server::serve(node, config, listeners, shutdown).await?;
    if let Some(console) = console {
        console.await.context("the console's task")??;
    }
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
