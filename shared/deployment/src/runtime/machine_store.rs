//! docker-machine stores made for one call and thrown away after it.
//!
//! A machine's docker-machine state belongs to its deployment, in the database: its
//! store entry (`machines/NAME/`: `config.json` and whatever the driver keeps beside
//! it, such as SSH keys) and the deployment's certificates. Before docker-machine runs,
//! a [`ScratchStore`] is made in a private directory (mode 0700) under the worker's
//! `--machines-dir`: the certificates in `certs/` (keys 0600), the `no-error-report`
//! file (no crash report leaves the machine), and the entries the call needs. After the
//! call, [`ScratchStore::take`] reads the entry back and the caller writes it to the
//! machine's row in its fenced transition; dropping the store deletes the directory.
//!
//! docker-machine writes absolute paths of its store into `config.json`; they are
//! replaced by [`STORE_PLACEHOLDER`] when an entry is read back and put back when it is
//! written out, so an entry moves between directories and hosts.

use std::collections::BTreeMap;
use std::fs;
use std::io;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use base64::Engine as _;
use lc_shared::secrets::{SecretError, SecretKey};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::tls::DeploymentTls;

/// Stands for the store's directory inside stored entries.
pub const STORE_PLACEHOLDER: &str = "{{LC_MACHINE_STORE}}";
/// Files larger than this are not kept (VM disk images of local drivers: such machines
/// cannot move between hosts anyway).
const MAX_FILE: u64 = 1024 * 1024;
/// Name prefix of scratch directories; the pid after it lets a later worker on the same
/// host remove what a killed one left.
const SCRATCH_PREFIX: &str = "lc-store-";

/// One machine's store entry: relative path → content (base64), store path replaced.
/// An entry with no files is a directory without `config.json`: a broken entry, kept
/// as such so that the next call sees what docker-machine would see.
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MachineEntry {
    pub files: BTreeMap<String, String>,
    /// Files left out for their size.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub skipped: Vec<String>,
}

impl std::fmt::Debug for MachineEntry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Contents hold driver tokens and keys: names only.
        f.debug_struct("MachineEntry")
            .field("files", &self.files.keys().collect::<Vec<_>>())
            .finish()
    }
}

fn entry_context(machine_id: Uuid) -> String {
    format!("machine-entry:{machine_id}")
}

impl MachineEntry {
    pub fn has_config(&self) -> bool {
        self.files.contains_key("config.json")
    }

    pub fn seal(&self, key: &SecretKey, machine_id: Uuid) -> Vec<u8> {
        // Serializing maps of strings cannot fail.
        let plain = serde_json::to_vec(self).unwrap_or_default();
        key.seal(&plain, &entry_context(machine_id))
    }

    pub fn open(
        key: &SecretKey,
        machine_id: Uuid,
        sealed: &[u8],
    ) -> Result<MachineEntry, SecretError> {
        let plain = key.open(sealed, &entry_context(machine_id))?;
        serde_json::from_slice(&plain).map_err(|_| SecretError::Format)
    }
}

/// A private docker-machine store for the calls of one step.
pub struct ScratchStore {
    dir: tempfile::TempDir,
    /// The absolute path docker-machine sees (MACHINE_STORAGE_PATH).
    path: PathBuf,
}

fn write_private(path: &Path, content: &[u8], mode: u32) -> io::Result<()> {
    if let Some(parent) = path.parent() {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(parent)?;
    }
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(path)?;
    io::Write::write_all(&mut file, content)?;
    // An existing file keeps its old mode through open(): set it.
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
}

impl ScratchStore {
    /// A new store under `parent` with the deployment's certificates.
    pub fn create(parent: &Path, tls: &DeploymentTls) -> io::Result<ScratchStore> {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(parent)?;
        let dir = tempfile::Builder::new()
            .prefix(&format!("{SCRATCH_PREFIX}{}-", std::process::id()))
            .tempdir_in(parent)?;
        fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o700))?;
        let path = fs::canonicalize(dir.path())?;
        let store = ScratchStore { dir, path };
        let certs = store.path.join("certs");
        write_private(&certs.join("ca.pem"), tls.ca_cert.as_bytes(), 0o644)?;
        write_private(&certs.join("ca-key.pem"), tls.ca_key.as_bytes(), 0o600)?;
        write_private(&certs.join("cert.pem"), tls.client_cert.as_bytes(), 0o644)?;
        write_private(&certs.join("key.pem"), tls.client_key.as_bytes(), 0o600)?;
        // docker-machine sends no crash report when this file exists.
        write_private(&store.path.join("no-error-report"), b"", 0o600)?;
        fs::DirBuilder::new()
            .mode(0o700)
            .create(store.path.join("machines"))?;
        Ok(store)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn ca_cert(&self) -> PathBuf {
        self.path.join("certs/ca.pem")
    }

    pub fn client_cert(&self) -> PathBuf {
        self.path.join("certs/cert.pem")
    }

    pub fn client_key(&self) -> PathBuf {
        self.path.join("certs/key.pem")
    }

    /// The global flags that make docker-machine use the deployment's certificates
    /// instead of generating its own (which parallel creates would race on).
    pub fn tls_flags(&self) -> Vec<String> {
        crate::docker_machine::tls_flags(&self.path)
    }

    fn machine_dir(&self, name: &str) -> PathBuf {
        self.path.join("machines").join(name)
    }

    /// Writes a machine's entry into the store.
    pub fn put(&self, name: &str, entry: &MachineEntry) -> io::Result<()> {
        let dir = self.machine_dir(name);
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&dir)?;
        let store = self.path.display().to_string();
        for (relative, content) in &entry.files {
            let relative = Path::new(relative);
            // Entries come from our own database; still, never write outside the entry.
            if relative.is_absolute()
                || relative
                    .components()
                    .any(|part| !matches!(part, std::path::Component::Normal(_)))
            {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("entry file {} leaves its directory", relative.display()),
                ));
            }
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(content)
                .map_err(|err| io::Error::new(io::ErrorKind::InvalidData, err))?;
            let bytes = match String::from_utf8(bytes) {
                Ok(text) => text.replace(STORE_PLACEHOLDER, &store).into_bytes(),
                Err(err) => err.into_bytes(),
            };
            write_private(&dir.join(relative), &bytes, 0o600)?;
        }
        Ok(())
    }

    /// Reads a machine's entry back: `None` when the store has no directory for it.
    pub fn take(&self, name: &str) -> io::Result<Option<MachineEntry>> {
        let dir = self.machine_dir(name);
        if !dir.is_dir() {
            return Ok(None);
        }
        let store = self.path.display().to_string();
        let mut entry = MachineEntry::default();
        let mut pending = vec![dir.clone()];
        while let Some(current) = pending.pop() {
            for item in fs::read_dir(&current)? {
                let item = item?;
                let kind = item.file_type()?;
                let path = item.path();
                let relative = path
                    .strip_prefix(&dir)
                    .map_err(io::Error::other)?
                    .display()
                    .to_string();
                if kind.is_dir() {
                    pending.push(path);
                } else if kind.is_file() {
                    if item.metadata()?.len() > MAX_FILE {
                        entry.skipped.push(relative);
                        continue;
                    }
                    let bytes = match fs::read(&path) {
                        Ok(bytes) => bytes,
                        // Removed between the listing and the read (a call still runs).
                        Err(err) if err.kind() == io::ErrorKind::NotFound => continue,
                        Err(err) => return Err(err),
                    };
                    let bytes = match String::from_utf8(bytes) {
                        Ok(text) => text.replace(&store, STORE_PLACEHOLDER).into_bytes(),
                        Err(err) => err.into_bytes(),
                    };
                    entry.files.insert(
                        relative,
                        base64::engine::general_purpose::STANDARD.encode(bytes),
                    );
                }
            }
        }
        Ok(Some(entry))
    }

    /// Deletes a machine's entry (a broken one that docker-machine cannot remove).
    pub fn remove_entry(&self, name: &str) -> io::Result<()> {
        match fs::remove_dir_all(self.machine_dir(name)) {
            Err(err) if err.kind() != io::ErrorKind::NotFound => Err(err),
            _ => Ok(()),
        }
    }

    /// Deletes the store now (dropping it does the same, quietly).
    pub fn close(self) -> io::Result<()> {
        self.dir.close()
    }
}

/// Removes scratch stores that killed workers of this host left under `parent` (their
/// pid is gone): they hold certificates in clear.
pub fn remove_stale(parent: &Path) -> usize {
    let Ok(items) = fs::read_dir(parent) else {
        return 0;
    };
    let mut removed = 0;
    for item in items.flatten() {
        let name = item.file_name().to_string_lossy().into_owned();
        let Some(pid) = name
            .strip_prefix(SCRATCH_PREFIX)
            .and_then(|rest| rest.split('-').next())
            .and_then(|pid| pid.parse::<i32>().ok())
        else {
            continue;
        };
        if pid != std::process::id() as i32
            && !super::process::pid_alive(pid)
            && fs::remove_dir_all(item.path()).is_ok()
        {
            removed += 1;
        }
    }
    removed
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_move_between_stores_with_their_paths_rewritten() {
        let parent = tempfile::tempdir().expect("tempdir");
        let tls = DeploymentTls::generate("demo").expect("tls");
        let first = ScratchStore::create(parent.path(), &tls).expect("store");
        let dir = first.path().join("machines/demo-1");
        fs::create_dir_all(dir.join("sub")).expect("mkdir");
        let config = format!(
            r#"{{"StorePath": "{0}", "CaCertPath": "{0}/certs/ca.pem"}}"#,
            first.path().display()
        );
        fs::write(dir.join("config.json"), &config).expect("write");
        fs::write(dir.join("sub/id_rsa"), b"\xffkey").expect("write");
        let entry = first.take("demo-1").expect("reads").expect("exists");
        assert!(entry.has_config());
        let stored = String::from_utf8(
            base64::engine::general_purpose::STANDARD
                .decode(&entry.files["config.json"])
                .expect("base64"),
        )
        .expect("utf8");
        assert!(stored.contains(STORE_PLACEHOLDER));
        assert!(!stored.contains(&first.path().display().to_string()));
        let second = ScratchStore::create(parent.path(), &tls).expect("store");
        second.put("demo-1", &entry).expect("puts");
        let back =
            fs::read_to_string(second.path().join("machines/demo-1/config.json")).expect("read");
        assert!(back.contains(&format!("{}/certs/ca.pem", second.path().display())));
        assert_eq!(
            fs::read(second.path().join("machines/demo-1/sub/id_rsa")).expect("read"),
            b"\xffkey"
        );
        let mode = fs::metadata(second.path().join("certs/ca-key.pem"))
            .expect("meta")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        assert!(second.path().join("no-error-report").exists());
        assert!(first.take("demo-2").expect("reads").is_none());
        // A directory without config.json stays a broken entry.
        fs::create_dir_all(first.path().join("machines/demo-3")).expect("mkdir");
        let broken = first.take("demo-3").expect("reads").expect("exists");
        assert!(!broken.has_config());
        second.put("demo-3", &broken).expect("puts");
        assert!(second.path().join("machines/demo-3").is_dir());
        let path = second.path().to_path_buf();
        second.close().expect("close");
        assert!(!path.exists());
    }

    #[test]
    fn sealed_entries_open_only_for_their_machine() {
        let key = SecretKey::parse(&SecretKey::generate_base64()).expect("key");
        let mut entry = MachineEntry::default();
        entry.files.insert("config.json".into(), "e30=".into());
        let id = Uuid::new_v4();
        let sealed = entry.seal(&key, id);
        assert_eq!(MachineEntry::open(&key, id, &sealed).expect("opens"), entry);
        assert!(MachineEntry::open(&key, Uuid::new_v4(), &sealed).is_err());
        assert!(!format!("{entry:?}").contains("e30="));
    }

    #[test]
    fn refuses_entries_that_leave_their_directory() {
        let parent = tempfile::tempdir().expect("tempdir");
        let tls = DeploymentTls::generate("demo").expect("tls");
        let store = ScratchStore::create(parent.path(), &tls).expect("store");
        let mut entry = MachineEntry::default();
        entry.files.insert("../../escape".into(), "e30=".into());
        assert!(store.put("demo-1", &entry).is_err());
    }
}
