//! Starting the roles, in order, each step logged: storage, runner, database, keys, gateway.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use anyhow::Context as _;
use gateway::auth::Authenticator;
use gateway::oidc::Oidc;
use gateway::runners::RunnerPool;
use gateway::tokens::TokenIssuer;
use registry::db::Db;
use registry::keys::KeyRole;
use registry::storage::Storage;
use registry::{Actor, Registry};
use secrecy::{ExposeSecret as _, SecretString};
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;

use crate::config::Config;

/// How long a stopping runner waits for its calls and connections to end (as the HTTP servers'
/// `shutdown_timeout`).
const RUNNER_DRAIN: Duration = Duration::from_secs(10);

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Role {
    Gateway,
    Runner,
    All,
}

type RunnerTask = tokio::task::JoinHandle<Result<(), tonic::transport::Error>>;

/// The roles of this process, running.
pub struct Running {
    pub gateway_addr: Option<SocketAddr>,
    pub runner_addr: Option<SocketAddr>,
    /// Where `/metrics` listens, when it is enabled.
    pub metrics_addr: Option<SocketAddr>,
    /// The bootstrap platform-admin key, when this start created it (it is shown once).
    pub new_admin_key: Option<SecretString>,
    gateway: Option<(actix_web::dev::ServerHandle, tokio::task::JoinHandle<std::io::Result<()>>)>,
    runner: Option<(oneshot::Sender<()>, RunnerTask)>,
    metrics: Option<(actix_web::dev::ServerHandle, crate::metrics::Task)>,
    /// The usage meter's writer: it owns counted usage, so on stop it is cancelled (after the
    /// HTTP drain) and awaited while it writes the rest, never aborted.
    usage: Option<(CancellationToken, tokio::task::JoinHandle<()>)>,
    /// Pollers that own no data (garbage collection, heartbeat, runner and alias watchers);
    /// aborted on stop, after the HTTP drain and the usage flush.
    background: Vec<tokio::task::JoinHandle<()>>,
}

impl Running {
    /// Runs until Ctrl-C / SIGTERM, then shuts down in order.
    pub async fn until_stopped(mut self) -> anyhow::Result<()> {
        let server_stopped = async {
            match &mut self.gateway {
                Some((_, task)) => task.await,
                None => std::future::pending().await,
            }
        };
        let ended = tokio::select! {
            _ = shutdown_signal() => None,
            result = server_stopped => Some(result),
        };
        match ended {
            None => tracing::info!("shutting down"),
            Some(result) => {
                self.gateway = None;
                result.context("the HTTP server task")?.context("the HTTP server stopped")?;
            }
        }
        self.stop().await
    }

    /// Stops in order: the HTTP server stops accepting and drains (the pollers still run, as
    /// its requests may need them), then the usage meter writes what was counted, then the
    /// pollers are aborted, then the runner and the metrics listener stop.
    pub async fn stop(self) -> anyhow::Result<()> {
        // The usage flush and the pollers' abort run even when the HTTP server failed.
        let drained = match self.gateway {
            Some((handle, task)) => {
                handle.stop(true).await;
                tracing::info!("HTTP server drained");
                task.await.context("the HTTP server task").and_then(|r| r.context("the HTTP server"))
            }
            None => Ok(()),
        };
        if let Some((stop, task)) = self.usage {
            stop.cancel();
            if let Err(e) = task.await {
                tracing::error!(error = %e, "the usage meter's task failed; usage not yet written is lost");
            }
        }
        for task in &self.background {
            task.abort();
        }
        drained?;
        if let Some((stop, mut task)) = self.runner {
            let _ = stop.send(());
            // Graceful: calls in flight finish. A client that keeps its connection open would
            // keep the server waiting for ever, so past the deadline it stops regardless.
            match tokio::time::timeout(RUNNER_DRAIN, &mut task).await {
                Ok(joined) => joined.context("runner task")?.context("runner server")?,
                Err(_) => {
                    tracing::warn!(
                        deadline_secs = RUNNER_DRAIN.as_secs(),
                        "runner connections still open; stopping it anyway"
                    );
                    task.abort();
                }
            }
        }
        if let Some((handle, task)) = self.metrics {
            handle.stop(true).await;
            task.await.context("the metrics server task")?.context("the metrics server")?;
        }
        Ok(())
    }
}

async fn shutdown_signal() {
    #[cfg(unix)]
    {
        let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(s) => s,
            Err(_) => return std::future::pending().await,
        };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = tokio::signal::ctrl_c().await;
}

pub async fn open_registry(config: &Config) -> anyhow::Result<Registry> {
    let storage = Storage::open(&config.storage()?).context("opening object storage")?;
    let db = Db::connect(config.database_url()?.expose_secret()).await.context("connecting to the database")?;
    Ok(Registry::new(db, storage))
}

/// Starts `role`. With `Role::All` the gateway talks to the in-process runner over
/// loopback gRPC (on an ephemeral port), exactly as it would to a remote one.
pub async fn start(config: &Config, role: Role) -> anyhow::Result<Running> {
    crate::private::own_files_only();
    crate::private::private_dir(&config.data_dir)
        .with_context(|| format!("creating data folder {}", config.data_dir.display()))?;
    let storage_config = config.storage()?;
    let storage = Storage::open(&storage_config).context("opening object storage")?;
    tracing::info!(storage.url = %storage_config.url, "object storage opened");

    let mut runner_addrs = config.gateway.runners.clone();
    let mut runner = None;
    let mut runner_addr = None;
    if matches!(role, Role::Runner | Role::All) {
        let listen = if role == Role::All { SocketAddr::from(([127, 0, 0, 1], 0)) } else { config.runner.listen };
        let listener =
            tokio::net::TcpListener::bind(listen).await.with_context(|| format!("binding the runner to {listen}"))?;
        let addr = listener.local_addr()?;
        let tls = crate::tls::runner_server(config, listen)?;
        let service = runner::Runner::new(
            &config.runner,
            config.runner_cache_dir(),
            storage.object_store(),
            blob_address(&storage),
        )
        .context("starting the runner")?;
        let (stop, stopped) = oneshot::channel::<()>();
        let mutual_tls = tls.is_some();
        let task = tokio::spawn(service.serve(listener, tls, async move {
            let _ = stopped.await;
        }));
        tracing::info!(runner.addr = %addr, runner.mutual_tls = mutual_tls, "runner listening");
        if role == Role::All {
            runner_addrs = vec![format!("http://{addr}")];
        }
        runner = Some((stop, task));
        runner_addr = Some(addr);
    }

    let mut gateway = None;
    let mut gateway_addr = None;
    let mut db_for_metrics = None;
    let mut background = Vec::new();
    let mut new_admin_key = None;
    let mut usage_writer = None;
    if matches!(role, Role::Gateway | Role::All) {
        let db = Db::connect(config.database_url()?.expose_secret()).await.context("connecting to the database")?;
        db.migrate().await.context("running database migrations")?;
        crate::private::private_sqlite(config.database_url()?.expose_secret())?;
        tracing::info!(database.backend = ?db.backend(), "database ready");
        db_for_metrics = Some(db.clone());
        let registry = Registry::new(db, storage);
        new_admin_key = bootstrap_admin_key(&registry, &config.admin_key_file()).await?;
        let auth = authenticator(config)?;
        let runner_tls = crate::tls::gateway_client(config)?;
        let runners = RunnerPool::new(&runner_addrs, config.gateway.routing.clone(), runner_tls)?;
        background.push(tokio::spawn(runners.clone().watch()));
        let listener = std::net::TcpListener::bind(config.gateway.listen)
            .with_context(|| format!("binding the gateway to {}", config.gateway.listen))?;
        let addr = listener.local_addr()?;
        let gc = tokio::spawn(gateway::collect_garbage_periodically(registry.clone(), config.gateway.clone()));
        let gc_grace = std::time::Duration::from_secs(config.gateway.gc_grace_secs);
        let upload_session_ttl = std::time::Duration::from_secs(config.gateway.upload_session_ttl_secs);
        let draft_ttl = std::time::Duration::from_secs(config.gateway.draft_ttl_secs);
        let limiter = std::sync::Arc::new(gateway::limits::Limiter::new(registry.clone()));
        background.push(tokio::spawn(limiter.clone().heartbeat()));
        let usage = std::sync::Arc::new(gateway::usage::UsageMeter::default());
        let flush_every = Duration::from_millis(config.gateway.usage_flush_ms.max(10));
        let usage_stop = CancellationToken::new();
        let usage_task =
            tokio::spawn(usage.clone().run(registry.clone(), flush_every, usage_stop.clone().cancelled_owned()));
        usage_writer = Some((usage_stop, usage_task));
        let resolver = gateway::resolver::Resolver::new(Duration::from_millis(config.gateway.resolve_cache_ttl_ms));
        background.push(tokio::spawn(resolver.clone().follow(registry.clone())));
        let state = gateway::AppState {
            registry,
            auth,
            limiter,
            usage,
            runners,
            resolver,
            gc_grace,
            upload_session_ttl,
            draft_ttl,
        };
        let server = gateway::serve(listener, state, &config.gateway)?;
        let handle = server.handle();
        let task = tokio::spawn(server);
        tracing::info!(gateway.addr = %addr, runners = ?runner_addrs, "gateway listening");
        gateway = Some((handle, task));
        background.push(gc);
        gateway_addr = Some(addr);
    }
    let (metrics, metrics_addr) = if config.metrics.enabled {
        let (addr, handle, task) =
            crate::metrics::serve(config.metrics.listen.unwrap_or(crate::metrics::DEFAULT_LISTEN), db_for_metrics)?;
        (Some((handle, task)), Some(addr))
    } else {
        (None, None)
    };
    Ok(Running {
        gateway_addr,
        runner_addr,
        metrics_addr,
        new_admin_key,
        gateway,
        runner,
        metrics,
        usage: usage_writer,
        background,
    })
}

/// The store's layout of tenants' blobs (registry `ObjectKey`), for the runner to hold every
/// spec's object paths to.
fn blob_address(storage: &Storage) -> runner::BlobAddress {
    let storage = storage.clone();
    std::sync::Arc::new(move |tenant_id: &str, sha256: &str| {
        let digest = registry::names::Digest::parse(sha256).ok()?;
        Some(storage.blob_path(tenant_id, &digest).to_string())
    })
}

/// Creates the first platform-admin key when none is active, writes it to `key_file`
/// (mode 0600) and returns it; otherwise returns None.
async fn bootstrap_admin_key(registry: &Registry, key_file: &Path) -> anyhow::Result<Option<SecretString>> {
    if registry.active_platform_admin_exists().await? {
        return Ok(None);
    }
    let (_, secret) = registry
        .create_key(&Actor::system(), None, "bootstrap admin", KeyRole::PlatformAdmin, None, Default::default())
        .await?;
    write_private(key_file, &format!("{secret}\n"))?;
    tracing::info!(file = %key_file.display(), "created the bootstrap platform-admin key");
    Ok(Some(SecretString::from(secret)))
}

/// Token keys (the signing key, earlier ones that still verify) and the OIDC issuers.
fn authenticator(config: &Config) -> anyhow::Result<Authenticator> {
    let previous = config
        .gateway
        .previous_signing_key_files
        .iter()
        .map(|f| {
            std::fs::read_to_string(f).with_context(|| format!("reading the previous signing key {}", f.display()))
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let tokens = TokenIssuer::new(&signing_key(&config.signing_key_file())?, &previous, config.gateway.token_ttl_secs)
        .context("loading the token signing keys")?;
    tracing::info!(jwt.kid = tokens.kid(), jwt.previous_keys = previous.len(), "token keys loaded");
    let oidc = Oidc::new(config.gateway.oidc.clone(), Duration::from_secs(config.gateway.jwks_refresh_secs));
    Ok(Authenticator::new(tokens, oidc, Duration::from_millis(config.gateway.auth_cache_ttl_ms)))
}

/// The token signing key from `file`, generated there on first start.
fn signing_key(file: &Path) -> anyhow::Result<SecretString> {
    if file.exists() {
        let pem =
            std::fs::read_to_string(file).with_context(|| format!("reading the signing key {}", file.display()))?;
        return Ok(SecretString::from(pem));
    }
    let pem = TokenIssuer::generate_pem()?;
    write_private(file, pem.expose_secret())?;
    tracing::warn!(file = %file.display(), "generated a token signing key; gateways that share a database must share this key");
    Ok(pem)
}

/// Writes `content` to `path`, readable by this user only (mode 0600).
pub(crate) fn write_private(path: &Path, content: &str) -> anyhow::Result<()> {
    use std::io::Write as _;
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)?;
    }
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(path).with_context(|| format!("writing {}", path.display()))?;
    file.write_all(content.as_bytes())?;
    Ok(())
}
