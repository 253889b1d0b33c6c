//! A highly available PostgreSQL of a test's own: `scripts/ha.sh` (a pg_auto_failover
//! monitor and two nodes with a synchronous standby) in a temporary directory on free
//! loopback ports, so that killing its primary disturbs no other test. Dropping it stops
//! every process it started and removes the directory.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use uuid::Uuid;

/// Where the project's scripts are.
fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/ha.sh")
}

fn run(args: &[&str], envs: &[(&str, String)]) -> Output {
    Command::new("bash")
        .arg(script())
        .args(args)
        .envs(envs.iter().map(|(name, value)| (*name, value.as_str())))
        .stdin(Stdio::null())
        .output()
        .expect("bash runs scripts/ha.sh")
}

fn describe(output: &Output) -> String {
    format!(
        "exit {:?}\n--- stdout\n{}\n--- stderr\n{}",
        output.status.code(),
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// Three free loopback ports (held together while chosen, so they differ).
fn free_ports() -> [u16; 3] {
    let listeners: Vec<std::net::TcpListener> = (0..3)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0").unwrap())
        .collect();
    let ports: Vec<u16> = listeners
        .iter()
        .map(|listener| listener.local_addr().unwrap().port())
        .collect();
    [ports[0], ports[1], ports[2]]
}

/// The file in a cluster's directory naming the test process that owns it.
const OWNER: &str = "owner.pid";

/// Stops and removes the clusters of test processes that are gone: a test killed at its
/// time limit (nextest's `terminate-after`) never runs its guard's `drop`.
fn reap_orphans() {
    let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) else {
        return;
    };
    for entry in entries.filter_map(Result::ok) {
        let dir = entry.path();
        let is_cluster = dir
            .file_name()
            .is_some_and(|name| name.to_string_lossy().starts_with("lc-ha-"));
        let Some(owner) = is_cluster
            .then(|| std::fs::read_to_string(dir.join(OWNER)).ok())
            .flatten()
        else {
            continue;
        };
        let alive = Path::new("/proc").join(owner.trim()).exists();
        if !alive {
            eprintln!(
                "stopping the HA cluster {} of a test that is gone",
                dir.display()
            );
            let _ = run(&["down", &dir.display().to_string()], &[]);
            let _ = std::fs::remove_dir_all(&dir);
        }
    }
}

/// The cluster; stopped (every process of it) and removed when dropped.
pub struct PrivateHaPostgres {
    dir: PathBuf,
    /// `PG_ADMIN_URL` of the cluster: both nodes, `target_session_attrs=read-write`.
    admin_url: String,
}

/// Why there is no cluster: the packages could not be installed (the test then says so
/// and skips), or the cluster did not come up (a failure).
pub enum HaUnavailable {
    NoPackages(String),
}

impl PrivateHaPostgres {
    /// Installs the packages when missing (`scripts/test.sh` does it first, so a test run
    /// never gets here without them), then starts the cluster. `asynchronous`: the
    /// standby is left out of the write quorum (commits do not wait for it).
    pub fn start(asynchronous: bool) -> Result<PrivateHaPostgres, HaUnavailable> {
        let install = run(&["install"], &[]);
        if !install.status.success() {
            return Err(HaUnavailable::NoPackages(describe(&install)));
        }
        reap_orphans();
        let dir = std::env::temp_dir().join(format!("lc-ha-{}", Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(OWNER), std::process::id().to_string()).unwrap();
        let mut cluster = PrivateHaPostgres {
            dir,
            admin_url: String::new(),
        };
        let [monitor, port1, port2] = free_ports();
        let dir = cluster.dir.display().to_string();
        let mut args = vec!["up", dir.as_str()];
        if asynchronous {
            args.push("--async");
        }
        let up = run(
            &args,
            &[
                ("LC_HA_MONITOR_PORT", monitor.to_string()),
                ("LC_HA_PORT1", port1.to_string()),
                ("LC_HA_PORT2", port2.to_string()),
            ],
        );
        assert!(
            up.status.success(),
            "scripts/ha.sh up failed (logs in {dir}): {}",
            describe(&up)
        );
        let env = std::fs::read_to_string(cluster.dir.join("env")).unwrap();
        cluster.admin_url = env
            .lines()
            .find_map(|line| line.strip_prefix("export PG_ADMIN_URL="))
            .map(|value| value.trim_matches('\'').to_owned())
            .expect("PG_ADMIN_URL in the cluster's env file");
        Ok(cluster)
    }

    pub fn admin_url(&self) -> &str {
        &self.admin_url
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn command(&self, args: &[&str]) -> String {
        let dir = self.dir.display().to_string();
        let mut argv = vec![args[0], dir.as_str()];
        argv.extend_from_slice(&args[1..]);
        let output = run(&argv, &[]);
        assert!(
            output.status.success(),
            "scripts/ha.sh {} failed: {}",
            argv.join(" "),
            describe(&output)
        );
        String::from_utf8_lossy(&output.stdout).trim().to_owned()
    }

    /// The node (1 or 2) that is primary now.
    pub fn primary(&self) -> u8 {
        self.command(&["primary"]).parse().unwrap()
    }

    /// `kill -9` of the primary's postmaster and of its pg_autoctl keeper (a lost host);
    /// returns the node's number.
    pub fn kill_primary(&self) -> u8 {
        self.command(&["kill-primary"]).parse().unwrap()
    }

    /// Starts node `n` again: a node that was primary rejoins as a standby.
    pub fn start_node(&self, n: u8) {
        self.command(&["start-node", &n.to_string()]);
    }

    /// Waits until there is a primary and a healthy standby again.
    pub fn wait_until_replicated(&self, timeout: Duration) {
        self.command(&["wait-sync", &timeout.as_secs().to_string()]);
    }

    /// The monitor's table of nodes, for the test's output.
    pub fn status(&self) -> String {
        self.command(&["status"])
    }
}

impl Drop for PrivateHaPostgres {
    fn drop(&mut self) {
        let dir = self.dir.display().to_string();
        let down = run(&["down", &dir], &[]);
        if !down.status.success() {
            eprintln!("scripts/ha.sh down {dir} failed: {}", describe(&down));
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
