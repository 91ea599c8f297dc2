//! `kurzdraht restore`: a backup (`kurzdraht backup`) into a stopped node's empty data
//! directory (or, with `--replace`, beside the store moved aside); the node reconciles with
//! its peers when it starts.

/// `kurzdraht restore --config … --from … [--replace]`.
pub async fn run(
    config: &std::path::Path,
    from: &std::path::Path,
    replace: bool,
) -> anyhow::Result<std::process::ExitCode> {
    let config = kurzdraht_node::config::NodeConfig::load(config)?;
    restore(&config, from, replace).await?;
    Ok(crate::exit::OK)
}

async fn restore(
    config: &kurzdraht_node::config::NodeConfig,
    from: &std::path::Path,
    replace: bool,
) -> anyhow::Result<()> {
    use kurzdraht_ledger::{backup, Ledger};
    let manifest = backup::check(from)
        .map_err(anyhow::Error::from)
        .map_err(|e| e.context(format!("{} cannot be restored", from.display())))?;
    if manifest.agency != config.agency {
        anyhow::bail!(
            "{} is a backup of {}, but this node is {}",
            from.display(),
            manifest.agency,
            config.agency
        );
    }
    let dir = &config.data_dir;
    let aside = if replace {
        backup::move_aside(dir, kurzdraht_node::clock::now_ms()).map_err(|e| {
            anyhow::Error::from(e)
                .context("nothing restored; stop the node first (kurzdraht restore --replace)")
        })?
    } else {
        None
    };
    if let Some(aside) = &aside {
        println!(
            "moved the store in {} aside to {}",
            dir.display(),
            aside.display()
        );
    }
    backup::restore(from, dir).map_err(|e| {
        let e = anyhow::Error::from(e);
        match &aside {
            Some(aside) => e.context(format!(
                "nothing restored; the previous store is in {}",
                aside.display()
            )),
            None if matches!(
                std::fs::read_dir(dir).map(|mut d| d.next().is_some()),
                Ok(true)
            ) =>
            {
                e.context("nothing restored; to move the current store aside, add --replace")
            }
            None => e,
        }
    })?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
    }
    let ledger = Ledger::open_encrypted(dir, &config.data_key).map_err(|e| {
        anyhow::Error::from(e).context(format!(
            "the restored store in {} does not open with this node's data key; move it aside",
            dir.display()
        ))
    })?;
    let report = ledger.verify_audit()?;
    let margin = kurzdraht_node::service::reconciliation::RESTORE_MARGIN.as_millis() as i64;
    let since = manifest.taken_at_ms.saturating_sub(margin).max(0);
    ledger.mark_restored(&manifest, since, kurzdraht_node::clock::now_ms())?;
    ledger.flush().await?;
    let at = |ms: i64| crate::output::rfc3339_of_ms(ms).unwrap_or_else(|| format!("{ms} ms"));
    println!(
        "restored the backup of {} taken at {} into {}: audit chain verifies ({} entries); \
         at its next start the node reconciles with its peers from {}. Unknown to it now: \
         what it sent, and the consents and withdrawals recorded, after {} (deploy/README.md, \
         \"What a restore does not bring back\")",
        manifest.agency,
        at(manifest.taken_at_ms),
        dir.display(),
        report.entries,
        at(since),
        at(manifest.taken_at_ms),
    );
    Ok(())
}
