//! `lc-worker`: runs jobs of every built-in kind from the queues. Stop it with SIGTERM
//! or ctrl-c: it finishes what it runs (within `--grace`) and hands back the rest.

fn main() -> anyhow::Result<()> {
    lc_deployment::cli::main_with(|registry| registry)
}
