//! The served OpenAPI document checked against the server by schemathesis (PyPI),
//! from the test venv (`scripts/test.sh` installs it): with an admin token, every
//! operation with generated input (a bounded number of examples), and no answer may be
//! a 5xx or differ from the document.

use std::path::PathBuf;
use std::time::Duration;

use lc_tests::TestEnv;

use super::{Server, token};

/// A run stops fuzzing after 60 s (--max-time); this bounds a run that hangs.
const RUN_LIMIT: Duration = Duration::from_secs(150);

/// The schemathesis CLI: `LC_SCHEMATHESIS`, else the one next to `LC_TEST_PYTHON`
/// (the test venv of `scripts/test.sh`).
fn schemathesis() -> PathBuf {
    if let Ok(path) = std::env::var("LC_SCHEMATHESIS") {
        return PathBuf::from(path);
    }
    let python = std::env::var("LC_TEST_PYTHON").expect(
        "LC_TEST_PYTHON names the test venv's python (scripts/test.sh sets it and installs schemathesis there)",
    );
    let path = PathBuf::from(python).with_file_name("schemathesis");
    assert!(
        path.exists(),
        "{} is missing: scripts/test.sh installs schemathesis into the test venv",
        path.display()
    );
    path
}

/// Every operation of `/openapi.json`, fuzzed with an admin token: no 5xx, and every
/// answer's status, content type and body as the document says. `/v1/events` is left
/// out: its answer never ends (its own test reads it).
#[tokio::test]
async fn http_schemathesis_finds_no_server_error_and_no_schema_mismatch() {
    let env = TestEnv::new().await;
    let server = Server::start(&env, &["--rate-limit", "off"]).await;
    let admin = token(&env, "ops", true);
    let report = std::env::temp_dir().join(format!("lc-schemathesis-{}", env.prefix));
    let run = tokio::process::Command::new(schemathesis())
        .current_dir(std::env::temp_dir())
        .args(["run", &format!("{}/openapi.json", server.url)])
        .args(["--header", &format!("Authorization: Bearer {admin}")])
        .args([
            "--checks",
            "not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance",
        ])
        .args(["--max-examples", "10", "--max-time", "60", "--request-timeout", "10"])
        .args(["--exclude-path", "/v1/events"])
        .args(["--report-dir", report.to_str().unwrap()])
        .env("NO_COLOR", "1")
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(RUN_LIMIT, run)
        .await
        .expect("schemathesis finished within its time limit")
        .expect("schemathesis runs");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        output.status.success(),
        "schemathesis found problems:\n{text}"
    );
    assert!(
        text.contains("passed"),
        "schemathesis ran no test case:\n{text}"
    );
    assert!(
        !server.log_text().contains(&admin[3..]),
        "the token is in the server's log"
    );
}
