//! Scale-out artefacts: `compose.yaml` is valid (it is not run: its images come from a
//! registry, and there is none here), `compose.local.yaml` stays on the host's network and
//! loopback (`scripts/compose-test.sh` runs it), and the docker-machine stand-in still keeps
//! the real CLI contract.

use std::path::PathBuf;
use std::process::Command;

fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

fn compose(args: &[&str]) -> String {
    compose_file("compose.yaml", args)
}

fn compose_file(file: &str, args: &[&str]) -> String {
    let output = Command::new("docker-compose")
        // `config` prints the environment it fills in; a failed assertion prints that.
        .env_remove("LC_SECRET_KEY")
        .arg("-f")
        .arg(repo_root().join(file))
        .args(args)
        .output()
        .expect("docker-compose not found; scripts/test.sh installs it");
    assert!(
        output.status.success(),
        "docker-compose {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

#[test]
fn compose_file_is_valid_and_scales_workers() {
    compose(&["config", "-q"]);
    let services = compose(&["config", "--services"]);
    for service in ["cockroach", "redis", "create-database", "migrate", "worker"] {
        assert!(
            services.lines().any(|line| line == service),
            "missing {service}: {services}"
        );
    }
    let cluster = compose(&["--profile", "cluster", "config", "--services"]);
    for node in [
        "cockroach-1",
        "cockroach-2",
        "cockroach-3",
        "cockroach-init",
    ] {
        assert!(
            cluster.lines().any(|line| line == node),
            "cluster profile lacks {node}"
        );
    }
    // `--scale worker=N` needs a worker without a fixed name or host port.
    let config = compose(&["config"]);
    let worker = config.split("\n  worker:").nth(1).unwrap_or_default();
    assert!(
        !worker.contains("container_name"),
        "a fixed container name prevents scaling"
    );
    assert!(
        !worker.contains("ports:"),
        "a published port prevents scaling"
    );
}

#[test]
fn the_local_compose_file_stays_on_the_host_network_and_loopback() {
    let services = compose_file("compose.local.yaml", &["config", "--services"]);
    let services: Vec<&str> = services.lines().collect();
    assert_eq!(
        services.len(),
        4,
        "postgres, redis, migrate, worker: {services:?}"
    );
    let config = compose_file("compose.local.yaml", &["config"]);
    // One `network_mode: host` per service, and nothing published or bound elsewhere.
    assert_eq!(
        config.matches("network_mode: host").count(),
        services.len(),
        "{config}"
    );
    assert!(!config.contains("ports:"), "{config}");
    assert!(!config.contains("0.0.0.0"), "{config}");
    let worker = config.split("\n  worker:").nth(1).unwrap_or_default();
    assert!(!worker.contains("container_name"), "{worker}");
    assert!(
        worker.contains("/readyz"),
        "the healthcheck asks /readyz: {worker}"
    );
    assert!(worker.contains("127.0.0.1:0"), "{worker}");
}

#[test]
fn docker_machine_stand_in_keeps_the_real_contract() {
    let output = Command::new("bash")
        .arg(repo_root().join("tests/docker-machine/selftest.sh"))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "stand-in self-test failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(stdout.contains(" passed, 0 failed"), "{stdout}");
}
