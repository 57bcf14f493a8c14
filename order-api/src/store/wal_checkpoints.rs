//! SQLite's WAL checkpoints, moved off the write path. A committed transaction goes to the
//! write-ahead log; a checkpoint copies the log's pages into the database file and syncs it,
//! so the log can start again from its beginning. SQLite's own (automatic) checkpoint runs
//! inside the commit that takes the log past 1,000 pages, on the connection that committed:
//! here that is the one writer every order's commit queues on, so each such checkpoint (a
//! thousand page copies and a sync of the database file) held up every commit behind it.
//!
//! Instead a task checkpoints every [`CHECKPOINT_EVERY`] on a connection of the read pool,
//! `PASSIVE`: it copies what it can without waiting for, or holding up, the writer or any
//! reader. The writer keeps an automatic checkpoint only as a backstop, at
//! [`BACKSTOP_PAGES`], for when this task falls that far behind (or is gone).
//! PostgreSQL has checkpoints of its own and needs none of this.

use std::time::Duration;

use sqlx::{AnyPool, Row};

/// How often the log is checkpointed: at 2,000 orders a second the writer adds about a
/// thousand pages to it in this time, what SQLite's automatic checkpoint would take at once.
pub(super) const CHECKPOINT_EVERY: Duration = Duration::from_millis(100);

/// The writer's automatic checkpoint, a backstop only: pages of log (4 KiB each) past which
/// the committing connection checkpoints itself.
pub(super) const BACKSTOP_PAGES: u32 = 16_384;

/// What one checkpoint did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Checkpoint {
    /// Pages in the log when it ran.
    pub log_pages: i64,
    /// Of them, the pages in the database file when it ended.
    pub copied_pages: i64,
}

/// Checkpoints the log once, without waiting for the writer or readers (`PASSIVE`).
pub(super) async fn checkpoint(reads: &AnyPool) -> anyhow::Result<Checkpoint> {
    use anyhow::Context;
    let row = sqlx::query("PRAGMA wal_checkpoint(PASSIVE)")
        .fetch_one(reads)
        .await
        .context("checkpointing the write-ahead log")?;
    Ok(Checkpoint {
        log_pages: row.try_get(1)?,
        copied_pages: row.try_get(2)?,
    })
}

/// Checkpoints the log every [`CHECKPOINT_EVERY`] until `alive` says the store is gone.
pub(super) async fn keep_checkpointed(reads: AnyPool, alive: impl Fn() -> bool) {
    let mut every = tokio::time::interval(CHECKPOINT_EVERY);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut failing = false;
    while alive() {
        every.tick().await;
        match checkpoint(&reads).await {
            Ok(_) if failing => {
                tracing::info!("checkpointing the orders database's log works again");
                failing = false;
            }
            Ok(_) => {}
            Err(error) if !failing => {
                tracing::warn!(
                    "{error:#} (retried every {CHECKPOINT_EVERY:?}; the writer checkpoints itself \
                     past {BACKSTOP_PAGES} pages meanwhile)"
                );
                failing = true;
            }
            Err(_) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU32, Ordering};

    use super::*;
    use crate::store::db;

    /// A database file of its own, removed when dropped.
    struct ScratchDatabase(std::path::PathBuf);

    impl ScratchDatabase {
        fn new() -> Self {
            let folder =
                std::env::temp_dir().join(format!("wal-checkpoints-{}", uuid::Uuid::new_v4()));
            std::fs::create_dir_all(&folder).expect("making a scratch folder");
            Self(folder)
        }

        fn url(&self) -> String {
            format!("sqlite://{}/orders.db", self.0.display())
        }
    }

    impl Drop for ScratchDatabase {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    /// Commits `transactions` transactions on the writer, each adding about two pages to the
    /// log (a row of 6 KB).
    async fn write(writer: &AnyPool, transactions: u32) {
        for _ in 0..transactions {
            sqlx::query("INSERT INTO scratch (payload) VALUES (zeroblob(6000))")
                .execute(writer)
                .await
                .expect("a write");
        }
    }

    #[tokio::test]
    async fn the_writer_leaves_the_log_to_the_checkpointer() {
        let scratch = ScratchDatabase::new();
        let pools = db::open(&scratch.url())
            .await
            .expect("opening the database");
        sqlx::query("CREATE TABLE scratch (payload BLOB NOT NULL)")
            .execute(&pools.writes)
            .await
            .expect("a table");
        // Well past SQLite's own threshold (1,000 pages), where the committing writer used
        // to checkpoint (and start the log again) itself.
        write(&pools.writes, 900).await;
        let first = checkpoint(&pools.reads).await.expect("a checkpoint");
        assert!(
            first.log_pages > 1_500,
            "the writer checkpointed the log itself: {first:?}"
        );
        assert_eq!(
            first.copied_pages, first.log_pages,
            "with no reader in the way, a passive checkpoint copies the whole log"
        );
        // Checkpointed, the log starts again from its beginning at the next write.
        write(&pools.writes, 10).await;
        let second = checkpoint(&pools.reads).await.expect("a checkpoint");
        assert!(
            second.log_pages < 100,
            "the log went on growing: {second:?}"
        );
    }

    #[tokio::test]
    async fn the_checkpointer_ends_with_its_store() {
        let scratch = ScratchDatabase::new();
        let pools = db::open(&scratch.url())
            .await
            .expect("opening the database");
        let asked = AtomicU32::new(0);
        keep_checkpointed(pools.reads, || asked.fetch_add(1, Ordering::Relaxed) < 3).await;
        assert_eq!(asked.load(Ordering::Relaxed), 4);
    }
}
