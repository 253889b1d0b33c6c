//! `lc`: enqueue jobs, run migrations, inspect and repair jobs, workers, queues and
//! deployments. Exit codes: 0 ok, 1 error, 2 usage, 3 `lc stuck` found something.

mod cli;

use clap::Parser;
use cli::{Cli, run};
use lc_shared::telemetry;

/// Restores the default SIGPIPE action, so that `lc jobs ls | head` ends quietly as
/// Unix tools do instead of panicking inside `println!`.
#[allow(unsafe_code)]
fn reset_sigpipe() {
    // SAFETY: runs first thing in `main`, before the runtime starts any thread, and
    // setting a signal's disposition to SIG_DFL has no other precondition.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}

fn main() {
    reset_sigpipe();
    let cli = Cli::parse();
    // `lc serve` logs a line per request; other commands only what goes wrong.
    let level = match cli.command {
        cli::Command::Serve(_) => "info",
        _ => "warn",
    };
    let service = match cli.command {
        cli::Command::Serve(_) => "lc-serve",
        _ => "lc",
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("error: cannot start the async runtime: {err}");
            std::process::exit(1);
        }
    };
    // Trace export sends from this runtime: installed inside it, flushed before exit.
    let telemetry = {
        let _inside = runtime.enter();
        telemetry::init(cli.log_format, level, service)
    };
    let outcome = runtime.block_on(run(cli));
    telemetry.shutdown();
    match outcome {
        Ok(code) => std::process::exit(code),
        Err(err) => {
            eprintln!("error: {}", cli::describe(&err));
            std::process::exit(1);
        }
    }
}
