//! The database under the store: SQLite or PostgreSQL, chosen by `DATABASE_URL`'s scheme and
//! reached through sqlx's `Any` driver, so one code path (and one set of SQL statements)
//! serves both. The SQL is what both speak: `$n` parameters (SQLite maps `$n` to the n-th
//! bind), `ON CONFLICT`, `RETURNING`. Each backend has its own migrations folder with the
//! same versions and the same schema in its own types.
//!
//! `Any` carries only plain values (integers, text, bytes), so timestamps are stored as text
//! ([`DbTime`]): RFC 3339 in UTC with 0, 3, 6 or 9 fraction digits, the form sqlx gave SQLite
//! before, which sorts bytewise in time order (PostgreSQL's columns are `COLLATE "C"` for it).
//! UUIDs and statuses are text too, and structured values (servers, faults, labels) JSON text
//! ([`json`], [`parse_json`]).

use anyhow::Context;
use chrono::{DateTime, SecondsFormat, Utc};
use serde::Serialize;
use sqlx::any::{AnyPoolOptions, AnyRow, AnyTypeInfo};
use sqlx::encode::IsNull;
use sqlx::error::BoxDynError;
use sqlx::{Any, AnyPool, Database, Decode, Encode, Row, Type};
use uuid::Uuid;

use crate::lifecycle::OrderStatus;

/// Which database the orders live in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// A file on this machine: one order-api instance at a time.
    Sqlite,
    /// A server that any number of order-api instances share.
    Postgres,
}

impl Backend {
    /// The backend a `DATABASE_URL` names.
    pub fn of_url(url: &str) -> anyhow::Result<Self> {
        let scheme = url.split(':').next().unwrap_or_default();
        match scheme {
            "sqlite" => Ok(Backend::Sqlite),
            "postgres" | "postgresql" => Ok(Backend::Postgres),
            _ => anyhow::bail!(
                "DATABASE_URL must start with sqlite: or postgres:// (got '{scheme}:...')"
            ),
        }
    }
}

/// The two pools of a store: reads, and writes (one connection on SQLite, which takes one
/// writer at a time anyway; a few on PostgreSQL).
pub(super) struct Pools {
    pub backend: Backend,
    pub reads: AnyPool,
    pub writes: AnyPool,
}

/// Connects to `url` and runs the backend's migrations.
pub(super) async fn open(url: &str) -> anyhow::Result<Pools> {
    sqlx::any::install_default_drivers();
    let backend = Backend::of_url(url)?;
    if backend == Backend::Sqlite && (url.contains(":memory:") || url.contains("mode=memory")) {
        anyhow::bail!(
            "an in-memory SQLite database cannot hold the orders (each connection would see \
             its own): name a file, e.g. sqlite://orders.db"
        );
    }
    let (url, writers, readers) = match backend {
        Backend::Sqlite => (sqlite_url(url), 1, 8),
        Backend::Postgres => (url.to_string(), 4, 8),
    };
    let shown = redacted(&url);
    let writes = pool_options(backend, writers)
        .connect(&url)
        .await
        .with_context(|| format!("opening the orders database {shown}"))?;
    let migrations = match backend {
        Backend::Sqlite => sqlx::migrate!("./migrations/sqlite"),
        Backend::Postgres => sqlx::migrate!("./migrations/postgres"),
    };
    migrations
        .run(&writes)
        .await
        .with_context(|| format!("migrating the orders database {shown}"))?;
    let reads = pool_options(backend, readers)
        .connect(&url)
        .await
        .with_context(|| format!("opening the orders database {shown}"))?;
    Ok(Pools {
        backend,
        reads,
        writes,
    })
}

fn pool_options(backend: Backend, connections: u32) -> AnyPoolOptions {
    let options = AnyPoolOptions::new().max_connections(connections);
    match backend {
        Backend::Postgres => options,
        Backend::Sqlite => options.after_connect(|connection, _| {
            Box::pin(async move {
                // WAL: readers never wait for the writer. FULL: a committed order survives a
                // power cut, not only a process crash.
                for pragma in [
                    "PRAGMA journal_mode = WAL",
                    "PRAGMA synchronous = FULL",
                    "PRAGMA foreign_keys = ON",
                    "PRAGMA busy_timeout = 10000",
                ] {
                    sqlx::query(pragma).execute(&mut *connection).await?;
                }
                Ok(())
            })
        }),
    }
}

/// A SQLite URL that creates the file when missing (unless the URL sets a mode).
fn sqlite_url(url: &str) -> String {
    let query = url.split_once('?').map(|(_, query)| query);
    if query.is_some_and(|query| query.split('&').any(|pair| pair.starts_with("mode="))) {
        url.to_string()
    } else if query.is_some() {
        format!("{url}&mode=rwc")
    } else {
        format!("{url}?mode=rwc")
    }
}

/// `url` without its password, for messages.
pub fn redacted(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut parsed) if parsed.password().is_some() => {
            let _ = parsed.set_password(Some("***"));
            parsed.to_string()
        }
        _ => url.to_string(),
    }
}

/// `count` parameters from `$first` on: `$3, $4, $5`.
pub(super) fn parameters(first: usize, count: usize) -> String {
    (first..first + count)
        .map(|n| format!("${n}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The first `count` parameters of a statement, `$1, $2` on PostgreSQL and `?, ?` on SQLite
/// (where sqlx binds nameless parameters in order, so only a statement's first ones may be
/// nameless; any named ones after them go on from `$<count + 1>`).
///
/// SQLite keeps a `$N` as a named parameter in a list it searches by name when it parses the
/// statement and again for every bind (`sqlite3_bind_parameter_name`, which sqlx calls for
/// each parameter): quadratic in the parameters, which a group commit's multi-row insert has
/// by the thousand. A nameless `?` is neither looked up nor listed.
pub(super) fn leading_parameters(on_postgres: bool, count: usize) -> String {
    if on_postgres {
        parameters(1, count)
    } else {
        vec!["?"; count].join(", ")
    }
}

/// `count` rows of `width` parameters each for a multi-row `VALUES` holding a statement's
/// first parameters (see [`leading_parameters`]): `($1, $2), ($3, $4)` on PostgreSQL,
/// `(?, ?), (?, ?)` on SQLite.
pub(super) fn value_rows(on_postgres: bool, width: usize, count: usize) -> String {
    if !on_postgres {
        return vec![format!("({})", leading_parameters(false, width)); count].join(", ");
    }
    (0..count)
        .map(|row| format!("({})", parameters(row * width + 1, width)))
        .collect::<Vec<_>>()
        .join(", ")
}

/// A timestamp as the store keeps it: text, in one canonical form (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DbTime(pub DateTime<Utc>);

impl DbTime {
    /// The stored form.
    pub fn text(&self) -> String {
        self.0.to_rfc3339_opts(SecondsFormat::AutoSi, false)
    }
}

impl Type<Any> for DbTime {
    fn type_info() -> AnyTypeInfo {
        <String as Type<Any>>::type_info()
    }

    fn compatible(ty: &AnyTypeInfo) -> bool {
        <String as Type<Any>>::compatible(ty)
    }
}

impl<'q> Encode<'q, Any> for DbTime {
    fn encode_by_ref(
        &self,
        buf: &mut <Any as Database>::ArgumentBuffer<'q>,
    ) -> Result<IsNull, BoxDynError> {
        <String as Encode<'q, Any>>::encode(self.text(), buf)
    }
}

impl<'r> Decode<'r, Any> for DbTime {
    fn decode(value: <Any as Database>::ValueRef<'r>) -> Result<Self, BoxDynError> {
        let text = <String as Decode<'r, Any>>::decode(value)?;
        let time = DateTime::parse_from_rfc3339(&text)
            .map_err(|error| format!("'{text}' in the database is not a timestamp: {error}"))?;
        Ok(DbTime(time.with_timezone(&Utc)))
    }
}

/// The timestamp in `column`.
pub(super) fn time(row: &AnyRow, column: &str) -> anyhow::Result<DateTime<Utc>> {
    let time: DbTime = row
        .try_get(column)
        .with_context(|| format!("reading the timestamp {column}"))?;
    Ok(time.0)
}

/// The timestamp in `column`, if there is one.
pub(super) fn optional_time(row: &AnyRow, column: &str) -> anyhow::Result<Option<DateTime<Utc>>> {
    let time: Option<DbTime> = row
        .try_get(column)
        .with_context(|| format!("reading the timestamp {column}"))?;
    Ok(time.map(|time| time.0))
}

/// Whether `tx` is on PostgreSQL (where several instances write at once and row and advisory
/// locks matter; SQLite has one writer connection).
pub fn on_postgres(tx: &sqlx::Transaction<'_, Any>) -> bool {
    tx.backend_name() == <sqlx::Postgres as Database>::NAME
}

/// Makes `tx` READ COMMITTED on PostgreSQL, whatever the database's default: each statement
/// then sees what committed before it, such as what the previous holder of a lock `tx` waited
/// for wrote. Must come before the transaction's first query. Nothing on SQLite.
pub async fn read_committed(tx: &mut sqlx::Transaction<'_, Any>) -> anyhow::Result<()> {
    if on_postgres(tx) {
        sqlx::query("SET TRANSACTION ISOLATION LEVEL READ COMMITTED")
            .execute(&mut **tx)
            .await
            .context("setting a transaction's isolation to READ COMMITTED")?;
    }
    Ok(())
}

/// A value as a JSON text column (servers, faults, SSH keys, labels, placements).
pub(super) fn json<T: Serialize>(value: &T) -> String {
    serde_json::to_string(value).unwrap_or_else(|_| "null".into())
}

/// A JSON text column's value, if the column is not NULL.
pub(super) fn parse_json<T: serde::de::DeserializeOwned>(
    text: Option<String>,
) -> anyhow::Result<Option<T>> {
    text.map(|t| serde_json::from_str(&t).context("decoding a JSON column"))
        .transpose()
}

/// A UUID stored as text.
pub(super) fn parse_uuid(text: String) -> anyhow::Result<Uuid> {
    Uuid::parse_str(&text).with_context(|| format!("'{text}' in the database is not a UUID"))
}

/// An order status stored as its name.
pub(super) fn parse_status(text: String) -> anyhow::Result<OrderStatus> {
    text.parse().map_err(|e: String| anyhow::anyhow!(e))
}

/// SQLite's plan of `sql` (its `EXPLAIN QUERY PLAN` lines), in a scratch database with the
/// store's schema, its `arguments` parameters bound (to text: a plan does not depend on them
/// without statistics, which the store never gathers).
#[cfg(test)]
pub(super) async fn sqlite_query_plan(sql: &str, arguments: usize) -> anyhow::Result<Vec<String>> {
    let file = std::env::temp_dir().join(format!("plan-{}.db", Uuid::new_v4()));
    let pools = open(&format!("sqlite://{}", file.display())).await?;
    let explained = format!("EXPLAIN QUERY PLAN {sql}");
    let mut explain = sqlx::query(&explained);
    for n in 0..arguments {
        explain = explain.bind(n.to_string());
    }
    let plan = explain.fetch_all(&pools.reads).await;
    pools.reads.close().await;
    pools.writes.close().await;
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", file.display()));
    }
    plan?
        .iter()
        .map(|row| row.try_get("detail").context("a plan's line"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The stored form sorts as bytes in time order, whatever the fraction's length.
    #[test]
    fn stored_timestamps_sort_in_time_order() {
        let base = DateTime::parse_from_rfc3339("2026-11-26T12:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        let times = [
            base,
            base + chrono::Duration::nanoseconds(1),
            base + chrono::Duration::microseconds(1),
            base + chrono::Duration::milliseconds(1),
            base + chrono::Duration::milliseconds(500),
            base + chrono::Duration::seconds(1),
        ];
        let mut texts: Vec<String> = times.iter().map(|t| DbTime(*t).text()).collect();
        let in_time_order = texts.clone();
        texts.sort();
        assert_eq!(texts, in_time_order);
        assert_eq!(DbTime(base).text(), "2026-11-26T12:00:00+00:00");
    }

    #[tokio::test]
    async fn in_memory_sqlite_is_refused() {
        let error = open("sqlite::memory:").await.err().expect("refused");
        assert!(error.to_string().contains("in-memory"), "{error:#}");
    }

    #[test]
    fn backends_follow_the_url_scheme() {
        assert_eq!(
            Backend::of_url("sqlite://orders.db").unwrap(),
            Backend::Sqlite
        );
        assert_eq!(
            Backend::of_url("postgres://u@db/orders").unwrap(),
            Backend::Postgres
        );
        assert!(Backend::of_url("mysql://db/orders").is_err());
        assert_eq!(value_rows(true, 2, 2), "($1, $2), ($3, $4)");
        assert_eq!(value_rows(false, 2, 2), "(?, ?), (?, ?)");
        assert_eq!(parameters(3, 3), "$3, $4, $5");
        assert_eq!(leading_parameters(true, 2), "$1, $2");
        assert_eq!(leading_parameters(false, 2), "?, ?");
        assert_eq!(sqlite_url("sqlite://a.db"), "sqlite://a.db?mode=rwc");
        assert_eq!(sqlite_url("sqlite://a.db?mode=ro"), "sqlite://a.db?mode=ro");
        assert_eq!(
            redacted("postgres://u:secret@db/orders"),
            "postgres://u:***@db/orders"
        );
    }
}
