//! moto, an independent fake of AWS, for the AWS plugin's tests: [`Moto::start`] serves it
//! on a free loopback port with request authentication on (every request must carry a valid
//! AWS SigV4 signature by a key moto knows, so a wrongly signing plugin is refused) and a
//! fresh access key, through `tests/aws/moto_server.py` (the one bootstrap, which
//! `scripts/moto.sh` runs too). [`Moto::describe_instances`] and [`Moto::image`] look at
//! what moto holds with boto3, the official AWS SDK (`tests/aws/describe.py`), so a test
//! checks the plugin's work through a client other than the plugin.
//!
//! moto and boto3 live in the virtualenv `scripts/setup.sh` makes (`target/sdk-venv`, from
//! `tests/sdk/requirements.txt`).

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde::Deserialize;
use serde_json::Value;
use tokio::process::{Child, Command};

use crate::processes::{free_port, log_tail, target_dir, workspace_root};

/// The name of an image every region of moto has, owned by Amazon (owner id
/// `137112412989`, alias `amazon`): what [`Moto::default_image`] looks up.
pub const DEFAULT_IMAGE_NAME: &str = "amzn2-ami-hvm-2.0.20180810-x86_64-gp2";

/// The owner alias of moto's shipped images, for DescribeImages' `Owners`.
pub const DEFAULT_IMAGE_OWNER: &str = "amazon";

/// How long moto may take to import, bind and bootstrap (seconds on an idle machine, much
/// more on a busy one).
const START_TIMEOUT: Duration = Duration::from_secs(90);

/// One image as DescribeImages answers it.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct MotoImage {
    /// `ami-...`.
    #[serde(rename = "ImageId")]
    pub id: String,
    /// The image's name (what a `name` filter matches).
    #[serde(rename = "Name")]
    pub name: String,
    /// The owning account's id.
    #[serde(rename = "OwnerId")]
    pub owner_id: String,
    /// The owner's alias (`amazon`), if it has one.
    #[serde(rename = "ImageOwnerAlias")]
    pub owner_alias: Option<String>,
}

/// A running moto server; killed when dropped.
pub struct Moto {
    /// `http://127.0.0.1:<port>`: the EC2 endpoint (and every other service's).
    pub url: String,
    /// The access key's id, of an IAM user allowed `ec2:*`.
    pub access_key_id: String,
    /// The access key's secret.
    pub secret_access_key: String,
    child: Child,
    dir: PathBuf,
    log: PathBuf,
    stopped: bool,
}

impl Moto {
    /// Starts moto on a free port with authentication on and a fresh access key; fails with
    /// its log when it does not come up, and says to run `scripts/setup.sh` when moto is
    /// not installed.
    pub async fn start() -> anyhow::Result<Self> {
        let python = venv_python()?;
        let id = uuid::Uuid::new_v4().simple().to_string();
        let dir = target_dir()
            .join("test-runs")
            .join(format!("moto-{}", &id[..12]));
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        // The port is free when picked but not held: another process may take it before
        // moto binds it, so a start that finds it taken tries another.
        let mut attempt = 0;
        loop {
            attempt += 1;
            match Self::start_on(&python, &dir, free_port()).await {
                Ok(moto) => return Ok(moto),
                Err(StartError::PortTaken(_)) if attempt < 3 => continue,
                Err(StartError::PortTaken(error) | StartError::Failed(error)) => {
                    return Err(error);
                }
            }
        }
    }

    async fn start_on(python: &Path, dir: &Path, port: u16) -> Result<Self, StartError> {
        let log = dir.join("moto.log");
        let credentials = dir.join("credentials.env");
        let file = std::fs::File::create(&log)
            .with_context(|| format!("creating {}", log.display()))
            .map_err(StartError::Failed)?;
        let stderr = file
            .try_clone()
            .context("sharing the log file")
            .map_err(StartError::Failed)?;
        let child = Command::new(python)
            .arg(workspace_root().join("tests/aws/moto_server.py"))
            .arg("--listen")
            .arg(format!("127.0.0.1:{port}"))
            .arg("--credentials")
            .arg(&credentials)
            .env_clear()
            .stdin(Stdio::null())
            .stdout(file)
            .stderr(stderr)
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("starting {}", python.display()))
            .map_err(StartError::Failed)?;
        let mut moto = Self {
            url: format!("http://127.0.0.1:{port}"),
            access_key_id: String::new(),
            secret_access_key: String::new(),
            child,
            dir: dir.to_path_buf(),
            log,
            stopped: false,
        };
        let deadline = Instant::now() + START_TIMEOUT;
        // moto_server.py writes the file whole once a signed request has been answered and
        // a wrongly signed one refused.
        while !credentials.exists() {
            if let Ok(Some(status)) = moto.child.try_wait() {
                let error = anyhow::anyhow!("moto exited ({status})\n{}", moto.log_tail());
                let log = std::fs::read_to_string(&moto.log).unwrap_or_default();
                return Err(if log.contains("Address already in use") {
                    StartError::PortTaken(error)
                } else {
                    StartError::Failed(error)
                });
            }
            if Instant::now() > deadline {
                return Err(StartError::Failed(anyhow::anyhow!(
                    "moto was not ready within {START_TIMEOUT:?}\n{}",
                    moto.log_tail()
                )));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let text = std::fs::read_to_string(&credentials)
            .with_context(|| format!("reading {}", credentials.display()))
            .map_err(StartError::Failed)?;
        let value = |name: &str| {
            shell_value(&text, name)
                .with_context(|| format!("{} has no {name}", credentials.display()))
                .map_err(StartError::Failed)
        };
        let (access_key_id, secret_access_key) =
            (value("AWS_ACCESS_KEY_ID")?, value("AWS_SECRET_ACCESS_KEY")?);
        moto.access_key_id = access_key_id;
        moto.secret_access_key = secret_access_key;
        Ok(moto)
    }

    /// Every instance in `region` matching DescribeInstances' `filters` (name, values), all
    /// pages, as boto3 sees them: a list of `{"InstanceId", "InstanceType", "ImageId",
    /// "State", "ClientToken", "Tags": {key: value}, "KeyName", "PrivateIpAddress",
    /// "PublicIpAddress", "LaunchTime"}`.
    pub async fn describe_instances(
        &self,
        region: &str,
        filters: &[(&str, &[&str])],
    ) -> anyhow::Result<Value> {
        self.describe_instances_with(&self.url, &self.secret_access_key, region, filters)
            .await
    }

    /// [`Moto::describe_instances`] sent to `endpoint` (moto's [`Moto::url`], or a fault
    /// proxy in front of it) and signed with `secret` (the key's own, or a wrong one); a
    /// refused signature is an error reading `AuthFailure`.
    pub async fn describe_instances_with(
        &self,
        endpoint: &str,
        secret: &str,
        region: &str,
        filters: &[(&str, &[&str])],
    ) -> anyhow::Result<Value> {
        let filters: Vec<Value> = filters
            .iter()
            .map(|(name, values)| serde_json::json!({"Name": name, "Values": values}))
            .collect();
        let filters = Value::Array(filters).to_string();
        self.describe(
            endpoint,
            secret,
            &["instances", "--region", region, "--filters", &filters],
        )
        .await
    }

    /// The one image of `owner` (account id or alias) named `name` in `region`, found as a
    /// plugin finds it: DescribeImages with `Owners` and a `name` filter.
    pub async fn image(&self, region: &str, owner: &str, name: &str) -> anyhow::Result<MotoImage> {
        let found = self
            .describe(
                &self.url,
                &self.secret_access_key,
                &[
                    "image", "--region", region, "--owner", owner, "--name", name,
                ],
            )
            .await?;
        serde_json::from_value(found.clone())
            .with_context(|| format!("reading the image describe.py found: {found}"))
    }

    /// [`DEFAULT_IMAGE_NAME`] of [`DEFAULT_IMAGE_OWNER`] in `region`.
    pub async fn default_image(&self, region: &str) -> anyhow::Result<MotoImage> {
        self.image(region, DEFAULT_IMAGE_OWNER, DEFAULT_IMAGE_NAME)
            .await
    }

    /// `tests/aws/describe.py ARGS` sent to `endpoint` with this moto's key id, signed with
    /// `secret`; its JSON, or an error with what it printed.
    async fn describe(&self, endpoint: &str, secret: &str, args: &[&str]) -> anyhow::Result<Value> {
        let python = venv_python()?;
        let output = Command::new(&python)
            .arg(workspace_root().join("tests/aws/describe.py"))
            .args(args)
            .env_clear()
            .env("AWS_ENDPOINT_URL", endpoint)
            .env("AWS_ACCESS_KEY_ID", &self.access_key_id)
            .env("AWS_SECRET_ACCESS_KEY", secret)
            .stdin(Stdio::null())
            .kill_on_drop(true)
            .output()
            .await
            .with_context(|| format!("running tests/aws/describe.py {}", args.join(" ")))?;
        if !output.status.success() {
            bail!(
                "tests/aws/describe.py {} failed ({}): {}",
                args.join(" "),
                output.status,
                String::from_utf8_lossy(&output.stderr).trim()
            );
        }
        serde_json::from_slice(&output.stdout).with_context(|| {
            format!(
                "tests/aws/describe.py printed no JSON: {}",
                String::from_utf8_lossy(&output.stdout)
            )
        })
    }

    /// The last lines of moto's log (its requests and errors), for failure messages.
    pub fn log_tail(&self) -> String {
        log_tail("moto", &self.log)
    }

    /// Stops moto and deletes its files (a `Moto` dropped without this keeps its log).
    pub async fn stop(mut self) {
        let _ = self.child.kill().await;
        let _ = std::fs::remove_dir_all(&self.dir);
        self.stopped = true;
    }
}

impl Drop for Moto {
    /// The process dies with its handle; the log stays for the post-mortem.
    fn drop(&mut self) {
        if !self.stopped {
            eprintln!("moto's log is in {}", self.log.display());
        }
    }
}

enum StartError {
    /// The port was taken between picking it and binding it.
    PortTaken(anyhow::Error),
    Failed(anyhow::Error),
}

/// The virtualenv's Python, with moto in it; fails saying to run `scripts/setup.sh`.
fn venv_python() -> anyhow::Result<PathBuf> {
    let venv = workspace_root().join("target/sdk-venv");
    let python = venv.join("bin/python");
    let moto = std::fs::read_dir(venv.join("lib"))
        .into_iter()
        .flatten()
        .flatten()
        .any(|python_dir| python_dir.path().join("site-packages/moto").is_dir());
    if !python.exists() || !moto {
        bail!(
            "moto is not installed in {}: run scripts/setup.sh (it installs \
             tests/sdk/requirements.txt)",
            venv.display()
        );
    }
    Ok(python)
}

/// The value of `NAME=value` in a shell-sourceable file (`shlex.quote`d: bare, or in single
/// quotes).
fn shell_value(text: &str, name: &str) -> Option<String> {
    let raw = text
        .lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix('='))?;
    let value = match raw.strip_prefix('\'') {
        Some(quoted) => quoted.strip_suffix('\'')?.replace("'\"'\"'", "'"),
        None => raw.to_string(),
    };
    (!value.is_empty()).then_some(value)
}

#[cfg(test)]
mod tests {
    use super::shell_value;

    /// Bare and single-quoted values both read back as written.
    #[test]
    fn reads_shell_quoted_values() {
        let text = "AWS_ACCESS_KEY_ID=AKIA123\nAWS_SECRET_ACCESS_KEY='a b'\"'\"'c'\n";
        assert_eq!(
            shell_value(text, "AWS_ACCESS_KEY_ID").as_deref(),
            Some("AKIA123")
        );
        assert_eq!(
            shell_value(text, "AWS_SECRET_ACCESS_KEY").as_deref(),
            Some("a b'c")
        );
        assert_eq!(shell_value(text, "AWS_ENDPOINT_URL"), None);
    }
}
