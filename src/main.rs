use clap::Parser as _;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    modelgate::cli::run(modelgate::cli::Cli::parse()).await
}
