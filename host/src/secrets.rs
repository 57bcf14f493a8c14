//! Where plugin secrets come from: a secrets folder (`--plugin-secrets-dir`), one file per
//! secret named after the manifest's variable (`PLUGIN_SECRET_<VENDOR>_<NAME>`), as Docker
//! and Kubernetes mount secrets; and the host's environment variable of the same name.
//!
//! A file wins over the variable: a file can be written or rotated while the host runs (the
//! plugin folder notices and reloads the plugin), a variable only with a restart. A file's value
//! is its contents without the trailing newline. Files are read through symlinks
//! (Kubernetes mounts `NAME -> ..data/NAME`, `..data -> ..<timestamp>`, and swaps `..data`
//! on rotation); only the exact variable names are ever opened, so the folder's dot-files
//! and anything else in it are ignored.
//!
//! Every secret a manifest names is required: a plugin with one missing is not loaded, and
//! [`MissingSecrets`] says which secret, which file and which variable, never a value.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use secrecy::SecretString;

use crate::manifest::Manifest;

/// The largest secret file read (API tokens and passwords are far smaller); a larger file
/// is refused rather than read into memory.
pub const MAX_SECRET_FILE_BYTES: u64 = 64 * 1024;

/// Where a host looks for plugin secrets.
#[derive(Debug, Clone, Default)]
pub struct SecretSource {
    dir: Option<PathBuf>,
}

/// What a secret file looked like when last looked at: a rotation changes it (a rewrite
/// changes the modification time or the length; Kubernetes' swap of `..data`, the file).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileStamp {
    modified: Option<SystemTime>,
    len: u64,
    device: u64,
    inode: u64,
}

/// Why one secret of a manifest has no value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SecretProblem {
    /// Neither a file nor the environment has it.
    #[error("secret '{key}' is missing: {}", missing_where(.variable, .dir.as_deref()))]
    Missing {
        /// The plugin's key.
        key: String,
        /// The variable (and file name).
        variable: String,
        /// The secrets folder, when the host has one.
        dir: Option<PathBuf>,
    },
    /// The file or the variable is there but empty.
    #[error("secret '{key}' is empty in {from}")]
    Empty {
        /// The plugin's key.
        key: String,
        /// `file <path>` or `environment variable <name>`.
        from: String,
    },
    /// The manifest names a variable that is not the plugin's own (the issue-15 rule, see
    /// [`crate::manifest::check_secret_variable`]): it is not read at all.
    #[error("{problem}")]
    NotOwn {
        /// The plugin's key.
        key: String,
        /// The rule it breaks, naming the variable.
        problem: String,
    },
    /// The file is there but cannot be used: unreadable, too large, not UTF-8, not a file.
    #[error("secret '{key}' cannot be read from {}: {reason}", .path.display())]
    Unreadable {
        /// The plugin's key.
        key: String,
        /// The file.
        path: PathBuf,
        /// What went wrong.
        reason: String,
    },
}

fn missing_where(variable: &str, dir: Option<&Path>) -> String {
    match dir {
        Some(dir) => format!(
            "no file {variable} in the secrets folder {} and no environment variable {variable}",
            dir.display()
        ),
        None => format!(
            "the environment variable {variable} is not set (and the host has no \
             --plugin-secrets-dir)"
        ),
    }
}

/// A plugin that cannot be served because secrets its manifest names have no value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the {vendor} plugin is not served: {}", problems_text(.problems))]
pub struct MissingSecrets {
    /// The manifest's vendor.
    pub vendor: String,
    /// One entry per secret without a value.
    pub problems: Vec<SecretProblem>,
}

fn problems_text(problems: &[SecretProblem]) -> String {
    problems
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

impl SecretSource {
    /// Secrets from the host's environment only.
    pub fn environment() -> Self {
        Self { dir: None }
    }

    /// Secrets from files in `dir` when there, else from the environment; `None` is
    /// [`SecretSource::environment`].
    pub fn new(dir: Option<PathBuf>) -> Self {
        Self { dir }
    }

    /// The secrets folder, if any.
    pub fn dir(&self) -> Option<&Path> {
        self.dir.as_deref()
    }

    /// The file that holds `variable`, if the host has a secrets folder. Only checked
    /// variable names (`A-Z`, `0-9`, `_`) get here, so it never leaves the folder.
    fn file_of(&self, variable: &str) -> Option<PathBuf> {
        self.dir.as_ref().map(|dir| dir.join(variable))
    }

    /// The stamps of every secret file `manifest` names, in its order (`None`: no file);
    /// a change means the secrets must be read again.
    pub fn stamps(&self, manifest: &Manifest) -> Vec<Option<FileStamp>> {
        manifest
            .secrets
            .iter()
            .map(|(key, variable)| {
                crate::manifest::check_secret_variable(&manifest.vendor, key, variable)
                    .ok()
                    .and_then(|()| self.file_of(variable))
                    .and_then(|path| stamp(&path))
            })
            .collect()
    }

    /// Every secret `manifest` names, by the plugin's key; or every one that has no value,
    /// with why.
    pub fn resolve(
        &self,
        manifest: &Manifest,
    ) -> Result<BTreeMap<String, SecretString>, MissingSecrets> {
        self.resolve_with(manifest, |variable| std::env::var(variable))
    }

    /// [`SecretSource::resolve`] reading variables through `environment` instead of this
    /// process's environment.
    pub fn resolve_with(
        &self,
        manifest: &Manifest,
        environment: impl Fn(&str) -> Result<String, std::env::VarError>,
    ) -> Result<BTreeMap<String, SecretString>, MissingSecrets> {
        let mut values = BTreeMap::new();
        let mut problems = Vec::new();
        for (key, variable) in &manifest.secrets {
            if let Err(problem) =
                crate::manifest::check_secret_variable(&manifest.vendor, key, variable)
            {
                problems.push(SecretProblem::NotOwn {
                    key: key.clone(),
                    problem,
                });
                continue;
            }
            match self.read(&manifest.vendor, key, variable, &environment) {
                Ok(value) => {
                    values.insert(key.clone(), value);
                }
                Err(problem) => problems.push(problem),
            }
        }
        if problems.is_empty() {
            Ok(values)
        } else {
            Err(MissingSecrets {
                vendor: manifest.vendor.clone(),
                problems,
            })
        }
    }

    /// One secret: the file when there, else the environment variable.
    fn read(
        &self,
        vendor: &str,
        key: &str,
        variable: &str,
        environment: &impl Fn(&str) -> Result<String, std::env::VarError>,
    ) -> Result<SecretString, SecretProblem> {
        if let Some(path) = self.file_of(variable) {
            match read_secret_file(&path) {
                Ok(Some(value)) if value.is_empty() => {
                    return Err(SecretProblem::Empty {
                        key: key.to_string(),
                        from: format!("file {}", path.display()),
                    });
                }
                Ok(Some(value)) => {
                    warn_if_world_readable(vendor, &path);
                    return Ok(SecretString::from(value));
                }
                Ok(None) => {}
                Err(reason) => {
                    return Err(SecretProblem::Unreadable {
                        key: key.to_string(),
                        path,
                        reason,
                    });
                }
            }
        }
        match environment(variable) {
            Ok(value) if value.is_empty() => Err(SecretProblem::Empty {
                key: key.to_string(),
                from: format!("environment variable {variable}"),
            }),
            Ok(value) => Ok(SecretString::from(value)),
            Err(std::env::VarError::NotPresent) => Err(SecretProblem::Missing {
                key: key.to_string(),
                variable: variable.to_string(),
                dir: self.dir.clone(),
            }),
            Err(std::env::VarError::NotUnicode(_)) => Err(SecretProblem::Empty {
                key: key.to_string(),
                from: format!("environment variable {variable} (not UTF-8)"),
            }),
        }
    }
}

fn stamp(path: &Path) -> Option<FileStamp> {
    use std::os::unix::fs::MetadataExt;

    let metadata = std::fs::metadata(path).ok()?;
    Some(FileStamp {
        modified: metadata.modified().ok(),
        len: metadata.len(),
        device: metadata.dev(),
        inode: metadata.ino(),
    })
}

/// A secret file's value without its trailing newline(s); `Ok(None)` when there is no such
/// file; `Err` (the reason, never the contents) when it is there but cannot be used.
fn read_secret_file(path: &Path) -> Result<Option<String>, String> {
    let file = match std::fs::File::open(path) {
        Ok(file) => file,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(error) => return Err(error.to_string()),
    };
    let metadata = file.metadata().map_err(|error| error.to_string())?;
    if !metadata.is_file() {
        return Err("not a regular file".into());
    }
    let mut bytes = Vec::new();
    file.take(MAX_SECRET_FILE_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|error| error.to_string())?;
    if bytes.len() as u64 > MAX_SECRET_FILE_BYTES {
        return Err(format!(
            "larger than {MAX_SECRET_FILE_BYTES} bytes, more than any secret needs"
        ));
    }
    let mut text = String::from_utf8(bytes).map_err(|_| "not UTF-8 text".to_string())?;
    let kept = text.trim_end_matches(['\n', '\r']).len();
    text.truncate(kept);
    Ok(Some(text))
}

/// Kubernetes mounts secrets 0644 and Docker 0444 unless told otherwise, so a file others
/// may read is accepted (refusing it would refuse both platforms' defaults); the operator
/// is told, once per load, that 0400 or 0440 would be tighter.
fn warn_if_world_readable(vendor: &str, path: &Path) {
    use std::os::unix::fs::PermissionsExt;

    if let Ok(metadata) = std::fs::metadata(path)
        && metadata.permissions().mode() & 0o004 != 0
    {
        tracing::warn!(
            vendor,
            file = %path.display(),
            "the secret file is readable by every user of this machine; 0400 or 0440 would \
             keep it to the host"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use secrecy::ExposeSecret;

    fn manifest(secrets: &[(&str, &str)]) -> Manifest {
        let mut text = "vendor = \"acme-test\"\ncomponent = \"x.wasm\"\n[secrets]\n".to_string();
        for (key, variable) in secrets {
            text.push_str(&format!("{key} = {variable:?}\n"));
        }
        Manifest::parse(&text, Path::new("acme-test.toml")).unwrap()
    }

    fn folder(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "host-secrets-{name}-{}",
            uuid::Uuid::new_v4().simple()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    /// A file's contents without the trailing newline is the value; a file wins over the
    /// environment variable of the same name.
    #[test]
    fn a_file_is_the_value_without_its_newline_and_wins_over_the_environment() {
        let dir = folder("file-wins");
        let variable = "PLUGIN_SECRET_ACME_TEST_FILE_WINS";
        std::fs::write(dir.join(variable), "from-the-file\r\n").unwrap();
        let environment = |name: &str| {
            (name == variable)
                .then(|| "from-the-environment".to_string())
                .ok_or(std::env::VarError::NotPresent)
        };
        let source = SecretSource::new(Some(dir.clone()));
        let manifest = manifest(&[("token", variable)]);
        let values = source.resolve_with(&manifest, environment).unwrap();
        assert_eq!(values["token"].expose_secret(), "from-the-file");

        // Without the file, the variable.
        std::fs::remove_file(dir.join(variable)).unwrap();
        let values = source.resolve_with(&manifest, environment).unwrap();
        assert_eq!(values["token"].expose_secret(), "from-the-environment");
        std::fs::remove_dir_all(dir).unwrap();
    }

    /// Kubernetes' layout: the file is a symlink into `..data`, itself a symlink to a
    /// timestamped folder; a rotation swaps `..data`, which changes the file's stamp and
    /// value. Dot-files are never taken for secrets.
    #[test]
    fn reads_through_kubernetes_symlinks_and_notices_their_swap() {
        let dir = folder("kubernetes");
        let variable = "PLUGIN_SECRET_ACME_TEST_TOKEN";
        std::fs::create_dir(dir.join("..2026_01_01")).unwrap();
        std::fs::write(dir.join("..2026_01_01").join(variable), "first").unwrap();
        std::os::unix::fs::symlink("..2026_01_01", dir.join("..data")).unwrap();
        std::os::unix::fs::symlink(format!("..data/{variable}"), dir.join(variable)).unwrap();
        let source = SecretSource::new(Some(dir.clone()));
        let manifest = manifest(&[("token", variable)]);
        let before = source.stamps(&manifest);
        assert!(before[0].is_some());
        assert_eq!(
            source.resolve(&manifest).unwrap()["token"].expose_secret(),
            "first"
        );

        std::fs::create_dir(dir.join("..2026_01_02")).unwrap();
        std::fs::write(dir.join("..2026_01_02").join(variable), "second").unwrap();
        std::os::unix::fs::symlink("..2026_01_02", dir.join("..data_tmp")).unwrap();
        std::fs::rename(dir.join("..data_tmp"), dir.join("..data")).unwrap();
        assert_ne!(source.stamps(&manifest), before);
        assert_eq!(
            source.resolve(&manifest).unwrap()["token"].expose_secret(),
            "second"
        );
        std::fs::remove_dir_all(dir).unwrap();
    }

    /// Every missing, empty or unusable secret is named with its file and variable; no
    /// value appears in the message.
    #[test]
    fn names_every_secret_without_a_value() {
        let dir = folder("missing");
        std::fs::write(dir.join("PLUGIN_SECRET_ACME_TEST_EMPTY"), "\n").unwrap();
        std::fs::write(
            dir.join("PLUGIN_SECRET_ACME_TEST_HUGE"),
            vec![b'x'; MAX_SECRET_FILE_BYTES as usize + 1],
        )
        .unwrap();
        std::fs::create_dir(dir.join("PLUGIN_SECRET_ACME_TEST_FOLDER")).unwrap();
        std::fs::write(dir.join("PLUGIN_SECRET_ACME_TEST_FINE"), "s3cr3t-value").unwrap();
        let source = SecretSource::new(Some(dir.clone()));
        let error = source
            .resolve(&manifest(&[
                ("absent", "PLUGIN_SECRET_ACME_TEST_ABSENT"),
                ("empty", "PLUGIN_SECRET_ACME_TEST_EMPTY"),
                ("huge", "PLUGIN_SECRET_ACME_TEST_HUGE"),
                ("folder", "PLUGIN_SECRET_ACME_TEST_FOLDER"),
                ("fine", "PLUGIN_SECRET_ACME_TEST_FINE"),
            ]))
            .unwrap_err();
        assert_eq!(error.problems.len(), 4, "{error}");
        let message = error.to_string();
        for expected in [
            "secret 'absent' is missing: no file PLUGIN_SECRET_ACME_TEST_ABSENT in the secrets folder",
            "no environment variable PLUGIN_SECRET_ACME_TEST_ABSENT",
            "secret 'empty' is empty in file",
            "secret 'huge' cannot be read from",
            "larger than 65536 bytes",
            "secret 'folder' cannot be read from",
        ] {
            assert!(message.contains(expected), "{expected}: {message}");
        }
        assert!(!message.contains("s3cr3t"), "{message}");

        let environment_only = SecretSource::environment()
            .resolve(&manifest(&[("absent", "PLUGIN_SECRET_ACME_TEST_ABSENT")]))
            .unwrap_err()
            .to_string();
        assert!(
            environment_only
                .contains("the environment variable PLUGIN_SECRET_ACME_TEST_ABSENT is not set"),
            "{environment_only}"
        );
        std::fs::remove_dir_all(dir).unwrap();
    }
}
