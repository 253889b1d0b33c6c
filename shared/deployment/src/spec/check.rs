//! The spec's checks: everything that ends up as a command-line argument or a
//! container setting is checked here, before anything is written.

use std::collections::BTreeMap;
use std::time::Duration;

use lc_shared::job::MAX_MAX_ATTEMPTS;

use super::{FileSpec, FlagValue, Nodes, Provider, Spec, SpecError, invalid};
use super::{MAX_FILES_BYTES, MAX_NODES, MAX_PARALLEL_CALLS};

/// Flags that docker-machine's own options or LaunchControl control; a spec may not set them.
const RESERVED_FLAGS: &[&str] = &[
    "driver",
    "d",
    "storage-path",
    "s",
    "debug",
    "D",
    "help",
    "h",
    "version",
    "v",
    "tls-ca-cert",
    "tls-ca-key",
    "tls-client-cert",
    "tls-client-key",
    "bugsnag-api-token",
];

fn is_flag_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && name.len() <= 100
}

/// `^[A-Z_][A-Z0-9_]*$`: the names of the credential environment variables.
pub fn is_env_var_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_uppercase() || c == '_')
        && chars.all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_')
        && name.len() <= 128
}

/// Container env names: letters, digits and '_', not starting with a digit.
fn is_container_env_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
        && name.len() <= 256
}

/// A value that becomes a command-line argument or a container setting.
fn check_text(field: &str, value: &str, max: usize) -> Result<(), SpecError> {
    if value.contains('\0') || value.contains('\n') || value.contains('\r') {
        return Err(invalid(field, "must not contain NUL or newline characters"));
    }
    if value.len() > max {
        return Err(invalid(field, format!("must be at most {max} bytes")));
    }
    Ok(())
}

fn check_image(field: &str, image: &str) -> Result<(), SpecError> {
    let ok = !image.is_empty()
        && image.len() <= 255
        && image
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "._-/:@".contains(c))
        && !image.starts_with('-');
    if ok {
        Ok(())
    } else {
        Err(invalid(
            field,
            format!(
                "{image:?} is not an image reference (expected something like lc-busybox:latest)"
            ),
        ))
    }
}

fn check_command(field: &str, command: &[String]) -> Result<(), SpecError> {
    if command.is_empty() {
        return Err(invalid(
            field,
            "must not be empty (leave it out to use the image's command)",
        ));
    }
    for (index, arg) in command.iter().enumerate() {
        if arg.contains('\0') {
            return Err(invalid(format!("{field}[{index}]"), "must not contain NUL"));
        }
        if arg.len() > 4096 {
            return Err(invalid(
                format!("{field}[{index}]"),
                "must be at most 4096 bytes",
            ));
        }
    }
    Ok(())
}

fn check_env(field: &str, env: &BTreeMap<String, String>) -> Result<(), SpecError> {
    for (name, value) in env {
        if !is_container_env_name(name) {
            return Err(invalid(
                format!("{field}.{name}"),
                "is not a valid environment variable name",
            ));
        }
        if name.starts_with("LC_") {
            return Err(invalid(
                format!("{field}.{name}"),
                "LC_* variables are set by LaunchControl",
            ));
        }
        if value.contains('\0') || value.len() > 32 * 1024 {
            return Err(invalid(
                format!("{field}.{name}"),
                "must be at most 32 KiB without NUL",
            ));
        }
    }
    Ok(())
}

fn check_labels(field: &str, labels: &BTreeMap<String, String>) -> Result<(), SpecError> {
    for (key, value) in labels {
        if key.is_empty() || key.starts_with("lc.") {
            return Err(invalid(
                format!("{field}.{key}"),
                "label keys must be non-empty and not start with \"lc.\" (reserved)",
            ));
        }
        check_text(&format!("{field}.{key}"), key, 256)?;
        check_text(&format!("{field}.{key}"), value, 4096)?;
    }
    Ok(())
}

fn check_ports(field: &str, ports: &[u16]) -> Result<(), SpecError> {
    if ports.contains(&0) {
        return Err(invalid(field, "ports must be between 1 and 65535"));
    }
    Ok(())
}

fn check_files(field: &str, files: &[FileSpec]) -> Result<(), SpecError> {
    let mut total = 0;
    for (index, file) in files.iter().enumerate() {
        let here = format!("{field}[{index}]");
        let path = &file.path;
        let ok = path.starts_with('/')
            && path.len() > 1
            && path.len() <= 100
            && !path.ends_with('/')
            && path.split('/').all(|part| part != ".." && part != ".")
            && !path.contains("//")
            && path.chars().all(|c| !c.is_control());
        if !ok {
            return Err(invalid(
                format!("{here}.path"),
                format!(
                    "{path:?} must be an absolute file path of at most 100 bytes, without '.', '..' or control characters"
                ),
            ));
        }
        if let Some(mode) = &file.mode {
            let valid =
                (1..=4).contains(&mode.len()) && mode.chars().all(|c| ('0'..='7').contains(&c));
            if !valid {
                return Err(invalid(
                    format!("{here}.mode"),
                    format!("{mode:?} is not an octal mode like \"0644\""),
                ));
            }
        }
        total += file.content.len();
    }
    if total > MAX_FILES_BYTES {
        return Err(invalid(
            field,
            format!("files hold {total} bytes, over the {MAX_FILES_BYTES} byte limit"),
        ));
    }
    Ok(())
}

impl Spec {
    /// Refuses anything that could not run, or that would reach a command line or a
    /// container setting unchecked. Each refusal names the field.
    pub fn validate(&self) -> Result<(), SpecError> {
        crate::validate_name(&self.name).map_err(|reason| invalid("name", reason))?;
        if lc_shared::job::has_nul(&self.to_json()) {
            return Err(invalid(
                "spec",
                "holds a NUL character (\\u0000), which the database cannot store",
            ));
        }
        if self.owner.trim().is_empty()
            || self.owner.len() > 100
            || self.owner.chars().any(char::is_control)
        {
            return Err(invalid("owner", "must be 1 to 100 printable characters"));
        }
        let count = self.node_count();
        if !(1..=MAX_NODES).contains(&count) {
            return Err(invalid(
                "nodes",
                format!("must be between 1 and {MAX_NODES}, got {count}"),
            ));
        }
        if !(1..=MAX_MAX_ATTEMPTS).contains(&self.max_attempts) {
            return Err(invalid(
                "max_attempts",
                format!("must be between 1 and {MAX_MAX_ATTEMPTS}"),
            ));
        }
        if let Some(login) = &self.registry_credentials_env {
            check_env_var_name("registry_credentials_env.username", &login.username)?;
            check_env_var_name("registry_credentials_env.password", &login.password)?;
        }
        if let Provider::DockerMachine {
            driver,
            driver_flags,
            credentials_env,
            ca_env,
            max_parallel_calls,
        } = &self.provider
        {
            if let Some(calls) = max_parallel_calls
                && !(1..=MAX_PARALLEL_CALLS).contains(calls)
            {
                return Err(invalid(
                    "provider.max_parallel_calls",
                    format!("must be between 1 and {MAX_PARALLEL_CALLS}, got {calls}"),
                ));
            }
            if let Some(ca) = ca_env {
                check_env_var_name("provider.ca_env.cert", &ca.cert)?;
                check_env_var_name("provider.ca_env.key", &ca.key)?;
            }
            check_driver(driver, driver_flags)?;
            for (index, name) in credentials_env.iter().enumerate() {
                check_env_var_name(&format!("provider.credentials_env[{index}]"), name)?;
            }
            if let Some(key) = self.provider.concurrency_key()
                && !lc_shared::concurrency::is_valid_key(&key)
            {
                return Err(invalid(
                    "provider.credentials_env",
                    format!(
                        "the driver and credential names make the account's concurrency key, at most {} characters: name fewer variables",
                        lc_shared::concurrency::MAX_KEY_LEN
                    ),
                ));
            }
        }
        if let Some(webhook) = &self.webhook {
            webhook.validate()?;
        }
        self.check_payloads()?;
        self.check_timeouts()?;
        self.health()?;
        self.expiry().map(|_| ())
    }

    /// The payload, and each node's overrides of it.
    fn check_payloads(&self) -> Result<(), SpecError> {
        let payload = &self.payload;
        check_image("payload.image", &payload.image)?;
        if let Some(command) = &payload.command {
            check_command("payload.command", command)?;
        }
        check_env("payload.env", &payload.env)?;
        check_ports("payload.ports", &payload.ports)?;
        check_files("payload.files", &payload.files)?;
        check_labels("payload.labels", &payload.labels)?;
        let Nodes::List(nodes) = &self.nodes else {
            return Ok(());
        };
        for (index, node) in nodes.iter().enumerate() {
            let field = format!("nodes[{index}]");
            if let Some(image) = &node.image {
                check_image(&format!("{field}.image"), image)?;
            }
            if let Some(command) = &node.command {
                check_command(&format!("{field}.command"), command)?;
            }
            check_env(&format!("{field}.env"), &node.env)?;
            if let Some(ports) = &node.ports {
                check_ports(&format!("{field}.ports"), ports)?;
            }
            if let Some(files) = &node.files {
                check_files(&format!("{field}.files"), files)?;
            }
            check_labels(&format!("{field}.labels"), &node.labels)?;
        }
        Ok(())
    }

    fn check_timeouts(&self) -> Result<(), SpecError> {
        if self
            .timeouts
            .machine
            .is_some_and(|timeout| timeout < Duration::from_millis(100))
        {
            return Err(invalid("timeouts.machine", "must be at least 100ms"));
        }
        if self
            .timeouts
            .stop
            .is_some_and(|timeout| timeout > Duration::from_secs(3600))
        {
            return Err(invalid("timeouts.stop", "must be at most 1h"));
        }
        Ok(())
    }
}

/// The name of an environment variable that the spec refers to.
pub(super) fn check_env_var_name(field: &str, name: &str) -> Result<(), SpecError> {
    if is_env_var_name(name) {
        Ok(())
    } else {
        Err(invalid(
            field,
            format!("{name:?} is not an environment variable name (^[A-Z_][A-Z0-9_]*$)"),
        ))
    }
}

/// A docker-machine driver and its flags: they become command-line arguments.
fn check_driver(driver: &str, driver_flags: &BTreeMap<String, FlagValue>) -> Result<(), SpecError> {
    if !is_flag_name(driver) {
        return Err(invalid(
            "provider.driver",
            format!(
                "{driver:?} is not a driver name (a-z, 0-9 and '-', starting with a letter or digit)"
            ),
        ));
    }
    for (flag, value) in driver_flags {
        let field = format!("provider.driver_flags.{flag}");
        if !is_flag_name(flag) {
            return Err(invalid(
                field,
                "flag names use a-z, 0-9 and '-', starting with a letter or digit (write them without leading dashes)",
            ));
        }
        if RESERVED_FLAGS.contains(&flag.as_str()) {
            return Err(invalid(field, "is set by LaunchControl, not by the spec"));
        }
        if crate::is_secret_key(flag) {
            return Err(invalid(
                field,
                "looks like a credential: name the environment variable that holds it in provider.credentials_env instead (values never go into specs, arguments or the database)",
            ));
        }
        for item in value.values() {
            check_text(&field, &item, 4096)?;
        }
    }
    Ok(())
}
