//! `lc`: enqueue jobs, run migrations, inspect and repair jobs, workers, queues and
//! deployments. Exit codes: 0 ok, 1 error, 2 usage, 3 `lc stuck` found something.

use clap::Parser;
use lc_producer::cli::{Cli, run};
use lc_shared::telemetry;

#[tokio::main]
async fn main() {
    let cli = Cli::parse();
    telemetry::init(cli.log_format, "warn");
    match run(cli).await {
        Ok(code) => std::process::exit(code),
        Err(err) => {
            eprintln!("error: {}", lc_producer::cli::describe(&err));
            std::process::exit(1);
        }
    }
}
