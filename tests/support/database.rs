//! The orders databases of the tests: SQLite files, or databases of their own on a
//! PostgreSQL (made here and dropped at cleanup), and databases as an earlier release left
//! them, for migration tests.

use std::path::{Path, PathBuf};

use anyhow::Context;

/// The orders database of a stack.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OrderStore {
    /// A SQLite file in the stack's folder.
    Sqlite,
    /// A database of its own on the PostgreSQL at [`postgres_admin_url`].
    Postgres,
}

impl OrderStore {
    /// What `TEST_ORDER_STORE` asks for (`sqlite`, the default, or `postgres`).
    pub fn from_env() -> Self {
        match std::env::var("TEST_ORDER_STORE").as_deref() {
            Ok("postgres") => OrderStore::Postgres,
            Ok("sqlite") | Err(_) => OrderStore::Sqlite,
            Ok(other) => panic!("TEST_ORDER_STORE must be sqlite or postgres, not '{other}'"),
        }
    }

    /// Makes a new, empty orders database of this store, named by `id`: the SQLite file
    /// `orders.db` in `dir`, or the PostgreSQL database `provisioner_test_<id>`. Its URL,
    /// and the PostgreSQL database's name (to drop at cleanup).
    pub(crate) async fn create_database(
        self,
        dir: &Path,
        id: &str,
    ) -> anyhow::Result<(String, Option<String>)> {
        Ok(match self {
            OrderStore::Sqlite => (
                format!("sqlite://{}", dir.join("orders.db").display()),
                None,
            ),
            OrderStore::Postgres => {
                let name = format!("provisioner_test_{id}");
                (create_postgres_database(&name).await?, Some(name))
            }
        })
    }
}

/// The PostgreSQL that stacks make their databases on: `TEST_POSTGRES_URL`, or the local
/// one (trust auth).
pub fn postgres_admin_url() -> String {
    std::env::var("TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_string())
}

/// Makes the database `name` on [`postgres_admin_url`]; fails saying what to start when
/// PostgreSQL is not there. The new database's URL.
pub async fn create_postgres_database(name: &str) -> anyhow::Result<String> {
    use sqlx::Connection as _;
    let admin_url = postgres_admin_url();
    let mut admin = sqlx::PgConnection::connect(&admin_url)
        .await
        .with_context(|| {
            format!(
                "PostgreSQL is not reachable at {admin_url}: start it \
             (pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start) \
             or set TEST_POSTGRES_URL"
            )
        })?;
    sqlx::query(&format!("CREATE DATABASE \"{name}\""))
        .execute(&mut admin)
        .await
        .with_context(|| format!("creating the database {name}"))?;
    let _ = admin.close().await;
    let mut url = url::Url::parse(&admin_url).context("parsing TEST_POSTGRES_URL")?;
    url.set_path(name);
    Ok(url.to_string())
}

/// Drops the database `name` (made by [`create_postgres_database`]), closing whatever
/// connections it still has.
pub async fn drop_postgres_database(name: &str) -> anyhow::Result<()> {
    use sqlx::Connection as _;
    let mut admin = sqlx::PgConnection::connect(&postgres_admin_url()).await?;
    sqlx::query(&format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"))
        .execute(&mut admin)
        .await
        .with_context(|| format!("dropping the database {name}"))?;
    let _ = admin.close().await;
    Ok(())
}

/// An orders database of the suite's store (`TEST_ORDER_STORE`) as an earlier release left
/// it: migrated only below `version`, for tests of what a later migration does to its rows.
pub struct EarlierDatabase {
    /// Its URL, for `Store::connect` (which runs the remaining migrations).
    pub url: String,
    /// A pool on it, to write the rows the earlier release would have.
    pub pool: sqlx::AnyPool,
    dir: PathBuf,
    postgres_name: Option<String>,
}

impl EarlierDatabase {
    /// Makes a new database (a SQLite file, or a PostgreSQL database) and runs order-api's
    /// migrations below `version` on it.
    pub async fn migrated_below(version: i64) -> anyhow::Result<Self> {
        let dir = std::env::temp_dir().join(format!("earlier-db-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir)?;
        let store = OrderStore::from_env();
        let id = &uuid::Uuid::new_v4().simple().to_string()[..12];
        let (url, postgres_name) = store.create_database(&dir, id).await?;
        let (url, mut migrator) = match store {
            OrderStore::Sqlite => (
                format!("{url}?mode=rwc"),
                sqlx::migrate!("../order-api/migrations/sqlite"),
            ),
            OrderStore::Postgres => (url, sqlx::migrate!("../order-api/migrations/postgres")),
        };
        migrator.migrations = migrator
            .migrations
            .iter()
            .filter(|migration| migration.version < version)
            .cloned()
            .collect::<Vec<_>>()
            .into();
        sqlx::any::install_default_drivers();
        let pool = sqlx::AnyPool::connect(&url).await?;
        migrator.run(&pool).await?;
        Ok(Self {
            url,
            pool,
            dir,
            postgres_name,
        })
    }

    /// Removes the database.
    pub async fn remove(self) -> anyhow::Result<()> {
        self.pool.close().await;
        if let Some(name) = &self.postgres_name {
            drop_postgres_database(name).await?;
        }
        let _ = std::fs::remove_dir_all(&self.dir);
        Ok(())
    }
}
