//! What the run was measured on: PostgreSQL and Redis settings, the machine, the build.

use std::collections::HashMap;

use anyhow::Result;
use serde_json::{Value, json};

use crate::bench::Bench;
use crate::stats::{command_line, redis_admin};

pub(crate) async fn settings(bench: &Bench) -> Result<Value> {
    // The server's settings as the workers see them (not the bench's observer session).
    let store = bench.args.connect.store(1)?;
    let client = store.client().await?;
    let mut pg = serde_json::Map::new();
    for name in [
        "server_version",
        "synchronous_commit",
        "default_transaction_isolation",
        "fsync",
        "wal_sync_method",
        "full_page_writes",
        "commit_delay",
        "shared_buffers",
        "max_connections",
    ] {
        let row = client.query_one(&format!("SHOW {name}"), &[]).await?;
        pg.insert(name.to_owned(), json!(row.get::<_, String>(0)));
    }
    let mut connection = redis_admin(&bench.args.connect.redis_url).await?;
    let mut config = async |name: &str| -> String {
        // A server that refuses CONFIG (a managed Redis) shows the refusal instead.
        let reply: redis::RedisResult<HashMap<String, String>> = redis::cmd("CONFIG")
            .arg("GET")
            .arg(name)
            .query_async(&mut connection)
            .await;
        match reply {
            Ok(mut values) => values.remove(name).unwrap_or_default(),
            Err(err) => err.to_string(),
        }
    };
    let appendonly = config("appendonly").await;
    let appendfsync = config("appendfsync").await;
    let save = config("save").await;
    let server: String = redis::cmd("INFO")
        .arg("server")
        .query_async(&mut connection)
        .await?;
    let version = server
        .lines()
        .find_map(|line| {
            line.strip_prefix("redis_version:")
                .map(|v| v.trim().to_owned())
        })
        .unwrap_or_default();
    let redis = json!({"redis_version": version, "appendonly": appendonly, "appendfsync": appendfsync, "save": save});
    let cpu_model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|info| {
            info.lines().find_map(|line| {
                line.strip_prefix("model name")
                    .map(|rest| rest.trim_start_matches([' ', '\t', ':']).to_owned())
            })
        })
        .unwrap_or_else(|| "unknown".to_owned());
    let repo = &bench.repo_dir;
    let commit = command_line("git", &["rev-parse", "--short=12", "HEAD"], repo).await;
    let dirty = command_line(
        "git",
        &["status", "--porcelain", "--untracked-files=no"],
        repo,
    )
    .await
    .is_some_and(|out| !out.is_empty());
    Ok(json!({
        "postgres": Value::Object(pg),
        "redis": redis,
        "machine": {
            "nproc": std::thread::available_parallelism().map_or(0, |n| n.get()),
            "cpu_model": cpu_model,
            "kernel": std::fs::read_to_string("/proc/sys/kernel/osrelease").map(|s| s.trim().to_owned()).unwrap_or_default(),
            "memory": std::fs::read_to_string("/proc/meminfo").ok().and_then(|m| m.lines().next().map(|l| l.split_whitespace().skip(1).collect::<Vec<_>>().join(" "))),
        },
        "rustc": command_line("rustc", &["--version"], repo).await,
        "client_threads": bench.args.client_threads,
        "git_commit": commit.map(|c| if dirty { format!("{c}-dirty") } else { c }),
    }))
}
