//! The operators' commands: the key ceremony (`pki …`), the signed directory
//! (`directory …`), `config check`, `health` and `audit verify`. Each runs on the host whose
//! role it names; none of them needs another host's secret.

use crate::exit;
use anyhow::Context;
use clap::Subcommand;
use kurzdraht_node::config::{read_secret, NodeConfig, NodeToml};
use kurzdraht_node::directory::{self, Directory, KeyState};
use kurzdraht_node::{directory_update, pki, policy::Role, reachability, tls};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

#[derive(Subcommand)]
pub enum PkiCommand {
    /// DEMOS AND TESTS ONLY: make a whole federation on this machine — CA, operator key,
    /// every agency's keys, certificates, tokens, the signed directory and ready node.toml /
    /// client.toml files on free loopback ports. Whoever holds the result holds every
    /// agency's secrets; separate authorities use `ca-init`, `operator-key`, `agency-keys`,
    /// `sign-request` and `directory` instead (deploy/README.md).
    Init {
        #[arg(long)]
        dir: PathBuf,
    },
    /// On the federation CA's (offline) machine: a new CA key (`ca.key`, mode 0600) and
    /// certificate (`ca.pem`, valid 10 years) in DIR.
    CaInit {
        #[arg(long)]
        dir: PathBuf,
    },
    /// On the federation operator's machine: the key that signs the directory
    /// (`operator.key`, mode 0600) and its public key (`operator.pub`, to every node host).
    OperatorKey {
        #[arg(long)]
        dir: PathBuf,
    },
    /// On an agency's node host: its TLS key and certificate request (`tls.key`, `tls.csr`),
    /// signing key (`signing-YYYY-MM.key`), data key, API token, node.toml, client.toml and
    /// its directory entry (`<agency>.entry.toml`), all in DIR. Send `tls.csr` to the CA and
    /// the entry to the federation operator; nothing secret leaves the host.
    AgencyKeys {
        /// The agency id (as in the directory and its certificate).
        #[arg(long)]
        agency: String,
        /// The agency's name.
        #[arg(long)]
        name: String,
        #[arg(long, value_parser = parse_role)]
        role: Role,
        /// Where the other nodes reach this node's PeerExchange, e.g.
        /// https://jobcenter-segeberg.kurzdraht.example:7443
        #[arg(long)]
        endpoint: String,
        /// Where the agency is competent: `plz:` and a postal code, or `ars:` and an official
        /// region key (2 to 12 digits); repeat it.
        #[arg(long)]
        competence: Vec<String>,
        /// The PeerExchange listen address.
        #[arg(long, default_value = "0.0.0.0:7443")]
        peer_listen: SocketAddr,
        /// The AgencyApi listen address.
        #[arg(long, default_value = "0.0.0.0:7444")]
        api_listen: SocketAddr,
        /// Serve metrics (plain HTTP) on this address.
        #[arg(long)]
        metrics_listen: Option<SocketAddr>,
        /// The node's data directory (relative: to DIR), e.g. /var/lib/kurzdraht
        #[arg(long, default_value = "data")]
        data_dir: String,
        #[arg(long)]
        dir: PathBuf,
    },
    /// On an agency's node host, to renew its certificate: a request for the CA, with a new
    /// TLS key (`--key-out`, mode 0600) or the key in use (`--reuse-key`). No file is
    /// overwritten: use dated names, e.g. tls-2027-10.key, tls-2027-10.csr.
    TlsRequest {
        #[arg(long)]
        agency: String,
        #[arg(long)]
        name: String,
        /// A new key, written here (must not exist) ...
        #[arg(
            long,
            required_unless_present = "reuse_key",
            conflicts_with = "reuse_key"
        )]
        key_out: Option<PathBuf>,
        /// ... or the key in use (e.g. /etc/kurzdraht/tls.key), which is only read.
        #[arg(long)]
        reuse_key: Option<PathBuf>,
        #[arg(long)]
        csr_out: PathBuf,
    },
    /// On the federation CA's machine: sign an agency's certificate request. The request
    /// must name exactly the agency; the certificate is for server and client authentication.
    SignRequest {
        #[arg(long)]
        ca_key: PathBuf,
        #[arg(long)]
        ca_cert: PathBuf,
        #[arg(long)]
        csr: PathBuf,
        /// The agency the request must name.
        #[arg(long)]
        agency: String,
        /// The certificate (must not exist).
        #[arg(long)]
        out: PathBuf,
        /// Validity in days (at most 396, 13 months).
        #[arg(long, default_value_t = pki::CERTIFICATE_VALIDITY_DAYS)]
        days: i64,
    },
    /// Anyone: print a TLS certificate's fingerprint (SHA-256 of its DER form) and the
    /// entry that revokes it, for the agency's `revoked_certificates` in the directory.
    Fingerprint {
        /// The certificate (PEM), e.g. the old tls.pem of a compromised key.
        #[arg(long)]
        cert: PathBuf,
    },
    /// Write a new Ed25519 signing key (mode 0600) and print its public key, to be listed as
    /// active for the agency in the directory before the node switches to it.
    SigningKey {
        /// The new key file (must not exist), e.g. /etc/kurzdraht/signing-2027-05.key
        #[arg(long)]
        out: PathBuf,
    },
    /// Write a new data key (mode 0600), e.g. /etc/kurzdraht/data-2027-05.key: for a new
    /// store, or to rotate a store's key with `pki rekey-store`.
    DataKey {
        #[arg(long)]
        out: PathBuf,
    },
    /// On the agency's node host, the node stopped: seal the whole store of node.toml again
    /// under a new data key (one transaction: the store is under the old key or the new).
    /// Then point `[storage] data_key_file` at the new key and start the node. Keep the old
    /// key as long as backups sealed with it are kept.
    RekeyStore {
        /// The node's node.toml (its store and current data key).
        #[arg(long)]
        config: PathBuf,
        /// The new data key (from `pki data-key`).
        #[arg(long)]
        new_key: PathBuf,
    },
    /// Write a new API token (mode 0600) and print its `[api] tokens` entry for node.toml
    /// (the token itself is never printed).
    ApiToken {
        #[arg(long)]
        out: PathBuf,
        /// The IT system's name in the entry.
        #[arg(long)]
        client: String,
    },
}

#[derive(Subcommand)]
pub enum DirectoryCommand {
    /// Federation operator: a directory of the given version from the agencies' entries;
    /// with `--from`, the agencies of the current directory as they stand there (keys in
    /// their states) and then the new agencies' entries (adding an agency).
    Assemble {
        #[arg(long)]
        version: u64,
        /// The directory to write (must not exist).
        #[arg(long)]
        out: PathBuf,
        /// The current directory, whose agencies the new version keeps (its version must be
        /// lower than --version).
        #[arg(long)]
        from: Option<PathBuf>,
        /// The agencies' `<agency>.entry.toml` files.
        #[arg(required = true)]
        entries: Vec<PathBuf>,
    },
    /// Federation operator: validate FILE and sign it with the operator key (FILE.sig).
    /// Raise `version` with every change: nodes refuse a version not newer than theirs.
    Sign {
        #[arg(long)]
        key: PathBuf,
        file: PathBuf,
    },
    /// Anyone: verify a directory's signature and show its version, fingerprint, agencies
    /// and keys. Exit code 7 if the signature does not verify.
    Verify {
        /// The operator's public key (`operator.pub`) ...
        #[arg(long)]
        operator_key: Option<PathBuf>,
        /// ... or a node's node.toml (its directory and operator key; also shows the
        /// highest version that node has run).
        #[arg(long, conflicts_with = "operator_key")]
        config: Option<PathBuf>,
        /// The directory (default: the one node.toml names).
        file: Option<PathBuf>,
    },
}

fn parse_role(value: &str) -> Result<Role, String> {
    match value {
        "jobcenter" => Ok(Role::Jobcenter),
        "jugendamt" => Ok(Role::Jugendamt),
        _ => Err(format!("{value:?} is no role (jobcenter, jugendamt)")),
    }
}

pub fn pki(command: PkiCommand) -> anyhow::Result<ExitCode> {
    match command {
        PkiCommand::Init { dir } => init(&dir)?,
        PkiCommand::CaInit { dir } => ca_init(&dir)?,
        PkiCommand::OperatorKey { dir } => {
            std::fs::create_dir_all(&dir)
                .with_context(|| format!("cannot create {}", dir.display()))?;
            let public = pki::new_operator_key(&dir)?;
            println!(
                "operator key: {} (stays here) and {} (to every node host)",
                dir.join("operator.key").display(),
                dir.join("operator.pub").display()
            );
            println!("public key {public}");
        }
        PkiCommand::AgencyKeys {
            agency,
            name,
            role,
            endpoint,
            competence,
            peer_listen,
            api_listen,
            metrics_listen,
            data_dir,
            dir,
        } => {
            let spec = pki::AgencySpec {
                id: agency.clone(),
                name,
                role,
                peer_addr: peer_listen,
                api_addr: api_listen,
                metrics_addr: metrics_listen,
                console_addr: None,
                competence,
            };
            let files = pki::agency_keys(&dir, &spec, &endpoint, &data_dir)?;
            print_agency_keys(&agency, &dir, &files);
        }
        PkiCommand::TlsRequest {
            agency,
            name,
            key_out,
            reuse_key,
            csr_out,
        } => tls_request(&agency, &name, key_out, reuse_key, &csr_out)?,
        PkiCommand::SignRequest {
            ca_key,
            ca_cert,
            csr,
            agency,
            out,
            days,
        } => sign_request(&ca_key, &ca_cert, &csr, &agency, &out, days)?,
        PkiCommand::Fingerprint { cert } => fingerprint(&cert)?,
        PkiCommand::SigningKey { out } => {
            let public = pki::new_signing_key(&out)?;
            println!("new signing key written to {}", out.display());
            println!(
                "public key (list it as active for the agency in the directory before the node signs with it):"
            );
            println!("{public}");
        }
        PkiCommand::RekeyStore { config, new_key } => rekey_store(&config, &new_key)?,
        PkiCommand::DataKey { out } => {
            pki::new_data_key(&out)?;
            println!("new data key written to {}", out.display());
        }
        PkiCommand::ApiToken { out, client } => {
            let entry = pki::new_api_token(&out, &client)?;
            println!(
                "new API token written to {} (give it to the IT system); its entry for [api] tokens:",
                out.display()
            );
            println!("{entry}");
        }
    }
    Ok(exit::OK)
}

/// `pki init`: the three Segeberg agencies on free loopback ports, all in `dir`.
fn init(dir: &Path) -> anyhow::Result<()> {
    let files = pki::init(dir, &kurzdraht_testkit::segeberg_on_free_ports(true)?)?;
    println!(
        "federation created in {} — FOR DEMOS AND TESTS: it holds every agency's secrets; \
         separate authorities follow deploy/README.md",
        dir.display()
    );
    for f in files {
        println!(
            "  {:<26} kurzdraht serve --config {}",
            f.id,
            f.node_config.display()
        );
        println!(
            "  {:<26} client: --client {}",
            "",
            f.client_config.display()
        );
    }
    Ok(())
}

/// `pki ca-init`.
fn ca_init(dir: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let (key, cert) = (dir.join("ca.key"), dir.join("ca.pem"));
    pki::refuse_existing(&key)?;
    pki::refuse_existing(&cert)?;
    let (cert_pem, key_pem) = pki::new_ca()?;
    pki::write_file(&key, &key_pem, true)?;
    pki::write_file(&cert, &cert_pem, false)?;
    println!(
        "federation CA: {} (keep it offline) and {} (to every node host), valid {} days",
        key.display(),
        cert.display(),
        pki::CA_VALIDITY_DAYS
    );
    Ok(())
}

/// What `pki agency-keys` made, and where each file goes.
fn print_agency_keys(agency: &str, dir: &Path, files: &pki::AgencyKeyFiles) {
    println!("keys of {agency} made in {}:", dir.display());
    println!("  to the federation CA:        {}", files.request.display());
    println!("  to the federation operator:  {}", files.entry.display());
    for s in &files.secrets {
        println!("  stays on this host (0600):   {}", s.display());
    }
    for s in &files.for_it_systems {
        println!("  to the IT systems, then delete here: {}", s.display());
    }
    println!(
        "  node.toml: {} (needs ca.pem, tls.pem, directory.toml, its .sig and operator.pub beside it)",
        files.node_config.display()
    );
    println!("  signing key (public) {}", files.signing_public);
}

/// `pki tls-request`: a new key and its request, or a request for the key in use.
fn tls_request(
    agency: &str,
    name: &str,
    key_out: Option<PathBuf>,
    reuse_key: Option<PathBuf>,
    csr_out: &Path,
) -> anyhow::Result<()> {
    pki::refuse_existing(csr_out)?;
    match (key_out, reuse_key) {
        (_, Some(existing)) => {
            let key = read_secret("--reuse-key", &existing)?;
            let request = pki::tls_request_for_key(agency, name, &key)?;
            pki::write_file(csr_out, &request, false)?;
            println!(
                "request {} for the key in use {} (to the federation CA)",
                csr_out.display(),
                existing.display()
            );
        }
        (Some(key_out), None) => {
            pki::refuse_existing(&key_out)?;
            let (request, key) = pki::tls_request(agency, name)?;
            pki::write_file(&key_out, &key, true)?;
            pki::write_file(csr_out, &request, false)?;
            println!(
                "new TLS key {} (stays here) and request {} (to the federation CA)",
                key_out.display(),
                csr_out.display()
            );
        }
        (None, None) => anyhow::bail!("give --key-out or --reuse-key"),
    }
    Ok(())
}

/// `pki sign-request`: the CA signs an agency's TLS certificate request.
fn sign_request(
    ca_key: &Path,
    ca_cert: &Path,
    csr: &Path,
    agency: &str,
    out: &Path,
    days: i64,
) -> anyhow::Result<()> {
    pki::refuse_existing(out)?;
    let ca_key_pem = read_secret("--ca-key", ca_key)?;
    let read = |key: &str, p: &Path| {
        std::fs::read_to_string(p).map_err(|e| {
            kurzdraht_node::NodeError::config(key, format!("cannot read {}: {e}", p.display()))
        })
    };
    let cert = pki::sign_request(
        &read("--ca-cert", ca_cert)?,
        &ca_key_pem,
        &read("--csr", csr)?,
        agency,
        days,
    )?;
    pki::write_file(out, &cert, false)?;
    println!(
        "certificate for {agency} written to {}, valid {days} days",
        out.display()
    );
    Ok(())
}

/// `pki fingerprint`: a certificate's SHA-256 and the directory line that revokes it.
fn fingerprint(cert: &Path) -> anyhow::Result<()> {
    let pem =
        std::fs::read_to_string(cert).with_context(|| format!("cannot read {}", cert.display()))?;
    let info = pki::certificate_info("--cert", &pem)?;
    let fingerprint = &info.sha256;
    println!("sha256 {fingerprint}");
    println!(
        "  certificate  names {}, valid until {}",
        info.names.join(", "),
        info.not_after.date()
    );
    println!(
        "  to revoke it, add to the agency's entry in the directory (then raise the version and sign):"
    );
    println!(
        "  revoked_certificates = [{{ sha256 = \"{fingerprint}\", since = \"{}\" }}]",
        time::OffsetDateTime::now_utc().date()
    );
    Ok(())
}

/// `pki rekey-store`: seals a stopped node's store under a new data key.
fn rekey_store(config: &Path, new_key: &Path) -> anyhow::Result<()> {
    let c = NodeConfig::load(config)?;
    let new = kurzdraht_ledger::DataKey::from_hex(&read_secret("--new-key", new_key)?)
        .map_err(|e| kurzdraht_node::NodeError::config("--new-key", e.to_string()))?;
    if new.to_hex() == c.data_key.to_hex() {
        anyhow::bail!(
            "{} is the store's current data key: make a new one with `pki data-key`",
            new_key.display()
        );
    }
    let ledger = kurzdraht_ledger::Ledger::open_encrypted(&c.data_dir, &c.data_key)?;
    let values = ledger.rekey(&new)?;
    // Proof: the store opens with the new key.
    drop(kurzdraht_ledger::Ledger::open_encrypted(&c.data_dir, &new)?);
    println!(
        "the store in {} is sealed under {} ({values} values sealed again)",
        c.data_dir.display(),
        new_key.display()
    );
    println!(
        "now set [storage] data_key_file = \"{}\" in {} and start the node; keep the old key as long as backups sealed with it are kept",
        new_key.display(),
        config.display()
    );
    Ok(())
}

fn describe_directory(d: &Directory) {
    println!("  version      {}", d.version());
    println!("  fingerprint  {}", d.fingerprint());
    for a in d.agencies() {
        println!(
            "  agency       {} ({}) {} — {}",
            a.id,
            a.role.as_str(),
            a.endpoint,
            a.name
        );
        if !a.competence.is_empty() {
            let c: Vec<String> = a.competence.iter().map(|c| c.to_string()).collect();
            println!("    competent  {}", c.join(", "));
        }
        for k in &a.keys {
            println!("    key        {} {}", k.key.to_hex(), k.state);
        }
        for r in &a.revoked_certificates {
            println!(
                "    revoked    TLS certificate sha256 {} since {}",
                hex::encode(r.sha256),
                r.since
            );
        }
    }
}

pub fn directory(command: DirectoryCommand) -> anyhow::Result<ExitCode> {
    match command {
        DirectoryCommand::Assemble {
            version,
            out,
            from,
            entries,
        } => {
            pki::refuse_existing(&out)?;
            let read = |p: &Path| {
                std::fs::read_to_string(p).with_context(|| format!("cannot read {}", p.display()))
            };
            let texts = entries
                .iter()
                .map(|p| read(p))
                .collect::<anyhow::Result<Vec<_>>>()?;
            let text = match &from {
                Some(current) => pki::extend_directory(&read(current)?, version, &texts)?,
                None => pki::assemble_directory(version, &texts)?,
            };
            let agencies = Directory::from_toml(&text)?.agencies().count();
            pki::write_file(&out, &text, false)?;
            let kept = match &from {
                Some(current) => format!(
                    " ({} kept from {}, {} added)",
                    agencies - entries.len(),
                    current.display(),
                    entries.len()
                ),
                None => String::new(),
            };
            println!(
                "directory version {version} with {agencies} agencies{kept} written to {}; sign it with `kurzdraht directory sign`",
                out.display()
            );
        }
        DirectoryCommand::Sign { key, file } => {
            let seed = read_secret("--key", &key)?;
            let d = pki::sign_directory_file(&file, &seed)?;
            println!(
                "{} signed: version {}, fingerprint {}",
                file.display(),
                d.version(),
                d.fingerprint()
            );
            println!("  signature {}", directory::signature_path(&file).display());
        }
        DirectoryCommand::Verify {
            operator_key,
            config,
            file,
        } => {
            let node = config.as_deref().map(NodeToml::read).transpose()?;
            let (key_path, file) = match (&node, operator_key) {
                (Some(n), _) => (
                    n.operator_key.clone(),
                    file.unwrap_or(n.directory_file.clone()),
                ),
                (None, Some(k)) => (
                    k,
                    file.context("name the directory file (or give --config)")?,
                ),
                (None, None) => anyhow::bail!("give --operator-key or --config"),
            };
            let operator = directory::read_public_key("--operator-key", &key_path)?;
            let bytes =
                std::fs::read(&file).with_context(|| format!("cannot read {}", file.display()))?;
            let sig_path = directory::signature_path(&file);
            let sig = std::fs::read_to_string(&sig_path)
                .with_context(|| format!("cannot read {}", sig_path.display()))?;
            if let Err(problem) = directory::check_signature(&bytes, &sig, &operator) {
                println!("{}: signature does NOT verify: {problem}", file.display());
                eprintln!("error: {}: {problem}", sig_path.display());
                return Ok(exit::unverified());
            }
            let text = String::from_utf8(bytes).context("the directory is not UTF-8")?;
            let d = Directory::from_toml(&text)?;
            println!(
                "{}: signature verified (operator key {})",
                file.display(),
                operator.to_hex()
            );
            describe_directory(&d);
            if let Some(n) = node {
                match directory_update::seen(&n.data_dir)? {
                    Some((v, f)) => println!("  this node has run version {v} ({f})"),
                    None => println!("  this node has run no directory yet"),
                }
                directory_update::check_not_older(&n.data_dir, &d)?;
            }
        }
    }
    Ok(exit::OK)
}

/// Days from now until `t`.
fn days_until(t: time::OffsetDateTime) -> i64 {
    (t - time::OffsetDateTime::now_utc()).whole_days()
}

pub async fn config_check(file: &Path, reach_peers: bool) -> anyhow::Result<ExitCode> {
    let c = NodeConfig::load(file)?;
    directory_update::check_not_older(&c.data_dir, &c.directory)?;
    let me = c
        .directory
        .get(&c.agency)
        .context("the agency vanished from the directory")?;
    println!("{}: valid", file.display());
    println!(
        "  agency       {} ({}) — {}",
        c.agency,
        c.role.as_str(),
        me.name
    );
    let days = days_until(c.certificate_not_after);
    println!(
        "  certificate  names {}, chains to the federation CA, valid until {} ({days} days); tls.key is its key",
        c.agency,
        c.certificate_not_after.date()
    );
    if days < 60 {
        eprintln!(
            "warning: the TLS certificate expires in {days} days: renew it (pki tls-request, signed by the federation CA)"
        );
    }
    let signing = c.signing_key.verifying_key();
    println!(
        "  signing key  {} ({})",
        signing.to_hex(),
        me.state_of(&signing).unwrap_or(KeyState::Active)
    );
    println!(
        "  directory    version {}, fingerprint {}, {} agencies, signature verified",
        c.directory.version(),
        c.directory.fingerprint(),
        c.directory.agencies().count()
    );
    println!(
        "  listen       peer {}, api {}, metrics {}",
        c.peer_addr,
        c.api_addr,
        c.metrics_addr
            .map_or_else(|| "off".to_string(), |a| a.to_string())
    );
    if !reach_peers {
        return Ok(exit::OK);
    }
    let mut all = true;
    let trust: std::sync::Arc<dyn tls::PeerTrust> =
        std::sync::Arc::new(std::sync::Arc::new(c.directory.clone()));
    for peer in c.directory.agencies().filter(|a| a.id != c.agency) {
        match reachability::probe(&c.tls, peer, trust.clone()).await {
            Ok(()) => println!(
                "  reached      {} at {}: mutual TLS, health SERVING",
                peer.id, peer.endpoint
            ),
            Err(why) => {
                all = false;
                println!("  NOT reached  {}: {why}", peer.id);
            }
        }
    }
    if all {
        Ok(exit::OK)
    } else {
        eprintln!("error: not every peer was reached");
        Ok(ExitCode::from(5))
    }
}

/// `health`: the node's grpc.health.v1 on its API port, without a token.
pub async fn health(config: Option<PathBuf>, client: Option<PathBuf>) -> anyhow::Result<ExitCode> {
    use tonic_health::pb::{health_client::HealthClient, HealthCheckRequest};
    let (agency, endpoint, ca_pem) = match (config, client) {
        (Some(node), _) => {
            let n = NodeToml::read(&node)?;
            let ca = std::fs::read_to_string(&n.ca_cert)
                .with_context(|| format!("cannot read {}", n.ca_cert.display()))?;
            (n.agency, pki::local_url(n.api_addr), ca)
        }
        (None, Some(client)) => {
            let c = kurzdraht_client::ClientConfig::load(&client)?;
            (c.agency, c.endpoint, c.ca_pem)
        }
        (None, None) => anyhow::bail!(
            "give --config (the node's node.toml) or --client (an IT system's client.toml, or KURZDRAHT_CLIENT)"
        ),
    };
    let channel = tonic::transport::Endpoint::from_shared(endpoint.clone())?
        .tls_config(kurzdraht_client::connection::api_client_tls(
            &ca_pem, &agency,
        ))?
        .connect_timeout(reachability::PROBE_TIMEOUT)
        .timeout(reachability::PROBE_TIMEOUT)
        .connect()
        .await;
    let channel = match channel {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: cannot reach {agency}'s node at {endpoint}: {e:?}");
            return Ok(ExitCode::from(5));
        }
    };
    let mut client = HealthClient::new(channel);
    let mut serving = true;
    for service in kurzdraht_node::rpc::health::HEALTH_SERVICES {
        let status = client
            .check(HealthCheckRequest {
                service: service.into(),
            })
            .await;
        match status {
            Ok(answer) => {
                let s = answer.into_inner().status();
                serving &= s == tonic_health::pb::health_check_response::ServingStatus::Serving;
                println!(
                    "{:<28} {}",
                    if service.is_empty() {
                        "(node)"
                    } else {
                        service
                    },
                    s.as_str_name()
                );
            }
            Err(s) => {
                eprintln!("error: {endpoint}: {:?}: {}", s.code(), s.message());
                return Ok(ExitCode::from(5));
            }
        }
    }
    Ok(if serving { exit::OK } else { exit::OTHER })
}

pub fn audit_verify(
    config: Option<PathBuf>,
    data_dir: Option<PathBuf>,
    scratch: Option<PathBuf>,
) -> anyhow::Result<ExitCode> {
    let dir = match (config, data_dir) {
        (Some(c), _) => NodeToml::read(&c)?.data_dir,
        (None, Some(d)) => d,
        (None, None) => anyhow::bail!("give --config or --data-dir"),
    };
    let scratch = scratch.unwrap_or_else(std::env::temp_dir);
    let report = kurzdraht_node::audit_check::verify_read_only(&dir, &scratch)?;
    println!(
        "audit chain of {} verifies: {} entries, head {} (checked on a copy; the store was only read)",
        dir.display(),
        report.entries,
        hex::encode(report.head_hash)
    );
    Ok(exit::OK)
}
