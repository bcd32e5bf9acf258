//! The `modelgate` command line.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use secrecy::ExposeSecret as _;

use crate::catalog::{self, AliasCommand, ModelsCommand, VersionsCommand};
use crate::config::Config;
use crate::pull::{PullArgs, pull};
use crate::push::{PushArgs, push};
use crate::startup::{self, Role};
use crate::telemetry;

#[derive(Debug, Parser)]
#[command(name = "modelgate", version, about = "Multi-tenant model registry and inference gateway")]
pub struct Cli {
    /// TOML configuration file (settings in MODELGATE__SECTION__KEY variables override it).
    #[arg(long, global = true, env = "MODELGATE_CONFIG")]
    pub config: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, clap::Args)]
pub struct ServeFlags {
    /// Folder for the SQLite file, local blobs, caches and keys.
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Address of the HTTP API.
    #[arg(long)]
    pub listen: Option<SocketAddr>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Everything in one process on embedded defaults: SQLite, local-folder storage, a CPU runner.
    Dev(ServeFlags),
    /// Run one role (or all) as configured.
    Serve {
        #[arg(long, value_enum, default_value = "all")]
        role: Role,
        #[command(flatten)]
        flags: ServeFlags,
    },
    /// Apply database migrations and exit.
    Migrate {
        #[arg(long)]
        data_dir: Option<PathBuf>,
    },
    /// Upload a folder as a new version of a model and commit it.
    Push(PushArgs),
    /// Download a version's files into a folder, verifying each sha256.
    Pull(PullArgs),
    /// Models of a tenant.
    #[command(subcommand)]
    Models(ModelsCommand),
    /// Versions of a model.
    #[command(subcommand)]
    Versions(VersionsCommand),
    /// Aliases of a model.
    #[command(subcommand)]
    Alias(AliasCommand),
}

fn apply(config: &mut Config, flags: &ServeFlags) {
    if let Some(dir) = &flags.data_dir {
        config.data_dir = dir.clone();
    }
    if let Some(listen) = flags.listen {
        config.gateway.listen = listen;
    }
}

pub async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Push(args) => push(args).await,
        Command::Pull(args) => pull(args).await,
        Command::Models(command) => catalog::models(command).await,
        Command::Versions(command) => catalog::versions(command).await,
        Command::Alias(command) => catalog::alias(command).await,
        Command::Migrate { data_dir } => {
            let mut config = Config::load(cli.config.as_deref())?;
            if let Some(dir) = data_dir {
                config.data_dir = dir;
            }
            let telemetry = telemetry::init(&config.log, &config.tracing)?;
            crate::private::own_files_only();
            crate::private::private_dir(&config.data_dir)?;
            let registry = startup::open_registry(&config).await?;
            registry.db().migrate().await.context("running migrations")?;
            crate::private::private_sqlite(config.database_url()?.expose_secret())?;
            println!("migrations applied");
            telemetry.shutdown();
            Ok(())
        }
        Command::Dev(flags) => {
            let mut config = Config::load(cli.config.as_deref())?;
            apply(&mut config, &flags);
            // A free loopback port unless one is configured: `dev` must start beside any other
            // modelgate on the machine (it prints where /metrics is).
            config.metrics.listen.get_or_insert(SocketAddr::from(([127, 0, 0, 1], 0)));
            serve(config, Role::All).await
        }
        Command::Serve { role, flags } => {
            let mut config = Config::load(cli.config.as_deref())?;
            apply(&mut config, &flags);
            serve(config, role).await
        }
    }
}

async fn serve(mut config: Config, role: Role) -> anyhow::Result<()> {
    // Chat templates render in a child process of this executable, limited in memory and time.
    if config.runner.template_sandbox.is_none() {
        config.runner.template_sandbox = Some(std::env::current_exe().context("finding this executable")?);
    }
    let telemetry = telemetry::init(&config.log, &config.tracing)?;
    let running = startup::start(&config, role).await?;
    if let Some(addr) = running.gateway_addr {
        println!("modelgate is serving http://{addr}");
        match &running.new_admin_key {
            Some(key) => println!(
                "bootstrap platform-admin key (shown once, saved to {}):\n  {}",
                config.admin_key_file().display(),
                key.expose_secret()
            ),
            None => println!("platform-admin key: see {}", config.admin_key_file().display()),
        }
    }
    if let Some(addr) = running.metrics_addr {
        println!("metrics at http://{addr}/metrics");
    }
    let stopped = running.until_stopped().await;
    telemetry.shutdown();
    stopped
}
