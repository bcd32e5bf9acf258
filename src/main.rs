use clap::Parser as _;

fn main() -> anyhow::Result<()> {
    // A chat template's render process (runner/src/template.rs): it limits itself and must
    // start no runtime or thread first.
    if std::env::args_os().nth(1).is_some_and(|a| a == runner::template::SANDBOX_COMMAND) {
        return Ok(runner::template::serve_sandbox()?);
    }
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(modelgate::cli::run(modelgate::cli::Cli::parse()))
}
