//! The programs' log writer: the code that logs appends its line to a buffer in memory and
//! returns; a thread of the writer's own writes the buffer out to stdout every
//! [`FLUSH_EVERY`], all the lines gathered since in one write.
//!
//! Two things follow. A reader of stdout that stops reading (a stuck log collector, a
//! container runtime's logging driver that blocks, a full pipe) stops only the writer's
//! thread, never the program: lines wait in the buffer up to [`BUFFER_LIMIT_BYTES`], and
//! beyond it new lines are dropped and counted ([`LogWriter::dropped_lines`]). And logging
//! costs the program no system call per line, nor a wake-up of another thread: a line is a
//! copy under a lock. (`tracing-appender`'s non-blocking writer, tried first, hands each line
//! to its thread through a channel and wakes it: the pipeline benchmark lost 7 % to that;
//! BENCHMARKS.md, *Log lines off the programs' threads*.)
//!
//! The price is a moment's delay: a line reaches stdout within [`FLUSH_EVERY`], and a process
//! killed outright loses the lines of its last moment. [`LogWriterGuard`], dropped when
//! `main` returns, writes out what is left.

use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tracing_subscriber::fmt::MakeWriter;

/// How often the writer's thread writes out the lines gathered.
pub const FLUSH_EVERY: Duration = Duration::from_millis(20);

/// The most the buffer holds for a reader of stdout that falls behind (some 80,000 lines of
/// 200 bytes); a line that would take it beyond is dropped.
pub const BUFFER_LIMIT_BYTES: usize = 16 * 1024 * 1024;

/// The most each of the writer's two buffers keeps allocated between writes: one grown by a
/// reader that fell behind is given back once its lines are written.
const KEPT_CAPACITY_BYTES: usize = 256 * 1024;

/// How long [`LogWriterGuard`]'s drop waits for the last lines to be written (a stuck reader
/// must not keep the program from exiting).
const LAST_WRITE_WAIT: Duration = Duration::from_secs(1);

/// The lines gathered and not yet written, and the count of those dropped.
#[derive(Debug)]
struct Shared {
    pending: Mutex<Vec<u8>>,
    limit_bytes: usize,
    dropped_lines: AtomicU64,
}

impl Shared {
    /// Adds one line (tracing's formatter writes each event's line in one call), or drops
    /// it when the buffer has no room for it.
    fn append(&self, line: &[u8]) {
        let mut pending = self.pending.lock().unwrap_or_else(PoisonError::into_inner);
        if pending.len() + line.len() > self.limit_bytes {
            drop(pending);
            self.dropped_lines.fetch_add(1, Ordering::Relaxed);
            return;
        }
        pending.extend_from_slice(line);
    }

    /// Swaps the gathered lines into `batch` (empty, its allocation, up to
    /// [`KEPT_CAPACITY_BYTES`], kept for the next).
    fn take_into(&self, batch: &mut Vec<u8>) {
        let mut pending = self.pending.lock().unwrap_or_else(PoisonError::into_inner);
        std::mem::swap(&mut *pending, batch);
    }
}

/// Where the log subscriber writes (a [`MakeWriter`]): each line goes into the buffer.
#[derive(Debug, Clone)]
pub struct LogWriter {
    shared: Arc<Shared>,
}

impl LogWriter {
    /// Starts the writer's thread, writing to `sink` every `flush_every`, holding at most
    /// `limit_bytes` for it.
    pub fn spawn<W: Write + Send + 'static>(
        sink: W,
        limit_bytes: usize,
        flush_every: Duration,
    ) -> std::io::Result<(Self, LogWriterGuard)> {
        let shared = Arc::new(Shared {
            pending: Mutex::new(Vec::new()),
            limit_bytes,
            dropped_lines: AtomicU64::new(0),
        });
        let (stop, stopped) = mpsc::channel::<()>();
        let (done, finished) = mpsc::channel::<()>();
        let writer = shared.clone();
        std::thread::Builder::new()
            .name("log-writer".into())
            .spawn(move || {
                write_out(&writer, sink, &stopped, flush_every);
                let _ = done.send(());
            })?;
        let guard = LogWriterGuard {
            stop: Some(stop),
            finished,
        };
        Ok((Self { shared }, guard))
    }

    /// Lines dropped so far because the buffer was full.
    pub fn dropped_lines(&self) -> u64 {
        self.shared.dropped_lines.load(Ordering::Relaxed)
    }
}

/// Writes the gathered lines to `sink` every `flush_every` until `stopped` says so (or its
/// sender is gone), then once more.
fn write_out<W: Write>(
    shared: &Shared,
    mut sink: W,
    stopped: &mpsc::Receiver<()>,
    flush_every: Duration,
) {
    let mut batch = Vec::new();
    loop {
        let stopping = !matches!(
            stopped.recv_timeout(flush_every),
            Err(RecvTimeoutError::Timeout)
        );
        shared.take_into(&mut batch);
        if !batch.is_empty() {
            // Nowhere to report a failed write but the log itself: the lines are lost.
            let _ = sink.write_all(&batch).and_then(|()| sink.flush());
            batch.clear();
            batch.shrink_to(KEPT_CAPACITY_BYTES);
        }
        if stopping {
            return;
        }
    }
}

impl<'a> MakeWriter<'a> for LogWriter {
    type Writer = LineAppender<'a>;

    fn make_writer(&'a self) -> Self::Writer {
        LineAppender(&self.shared)
    }
}

/// One event's writer: appends what it is given to the buffer.
#[derive(Debug)]
pub struct LineAppender<'a>(&'a Shared);

impl Write for LineAppender<'_> {
    fn write(&mut self, line: &[u8]) -> std::io::Result<usize> {
        self.0.append(line);
        Ok(line.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Keeps the writer's thread; dropping it writes out the lines gathered, waiting
/// a second at most (a stuck reader must not keep the program from exiting).
#[must_use = "the log writer stops when this is dropped: keep it until main returns"]
#[derive(Debug)]
pub struct LogWriterGuard {
    stop: Option<mpsc::Sender<()>>,
    finished: mpsc::Receiver<()>,
}

impl Drop for LogWriterGuard {
    fn drop(&mut self) {
        drop(self.stop.take());
        let _ = self.finished.recv_timeout(LAST_WRITE_WAIT);
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;
    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    use tracing_subscriber::fmt::MakeWriter;

    use super::LogWriter;

    /// A sink that keeps what it is given, and can be held shut (its writes wait).
    #[derive(Clone, Default)]
    struct Sink {
        written: Arc<Mutex<Vec<u8>>>,
        gate: Arc<Mutex<()>>,
    }

    impl Write for Sink {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            let _open = self.gate.lock().unwrap();
            self.written.lock().unwrap().extend_from_slice(bytes);
            Ok(bytes.len())
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    fn log_line(writer: &LogWriter, line: &str) {
        writer.make_writer().write_all(line.as_bytes()).unwrap();
    }

    #[test]
    fn lines_reach_the_sink_in_order_and_all_by_the_guards_drop() {
        let sink = Sink::default();
        let (writer, guard) =
            LogWriter::spawn(sink.clone(), 1024 * 1024, Duration::from_secs(60)).unwrap();
        let lines: Vec<String> = (0..1000).map(|i| format!("line {i}\n")).collect();
        for line in &lines {
            log_line(&writer, line);
        }
        drop(guard);
        let written = String::from_utf8(sink.written.lock().unwrap().clone()).unwrap();
        assert_eq!(written, lines.concat());
        assert_eq!(writer.dropped_lines(), 0);
    }

    #[test]
    fn a_sink_that_stops_taking_lines_never_stops_the_code_that_logs() {
        let sink = Sink::default();
        let shut = sink.gate.lock().unwrap();
        let (writer, guard) =
            LogWriter::spawn(sink.clone(), 100, Duration::from_millis(1)).unwrap();
        // The writer's thread takes the first line and waits on the shut sink with it; the
        // buffer then fills (ten lines of ten bytes) and the rest are dropped, counted.
        log_line(&writer, "first 789\n");
        while !writer.shared.pending.lock().unwrap().is_empty() {
            std::thread::sleep(Duration::from_millis(1));
        }
        for i in 0..1000 {
            log_line(&writer, &format!("line {i:04}\n"));
        }
        assert_eq!(writer.dropped_lines(), 990);
        drop(shut);
        drop(guard);
        let written = String::from_utf8(sink.written.lock().unwrap().clone()).unwrap();
        let expected: String = std::iter::once("first 789\n".to_string())
            .chain((0..10).map(|i| format!("line {i:04}\n")))
            .collect();
        assert_eq!(written, expected);
    }
}
