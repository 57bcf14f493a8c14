//! The HTTP server loop: accepts connections (at most `--max-connections` at once), reads
//! each request's headers within `--header-read-timeout-secs`, serves the router on them, and
//! drains them on shutdown. `axum::serve` has neither bound, so a client that opens
//! connections and never finishes its headers could hold them, and the process's file
//! descriptors, for ever.
//!
//! At the bound, a new connection makes room: the connections held are asked, one every
//! `--room-ask-interval-ms` (1 s), to close once their current request is answered, until
//! one has closed ([`Held`]). Those with a request in hand are asked first, oldest first: their
//! answer then says `Connection: close`, so the client sends nothing more on them. Only
//! when none has a request in hand is an idle kept-alive one closed (at once), where a
//! client may be sending its next request just then and see the connection fail. Without
//! making room, clients whose pools keep connections alive between requests (every HTTP
//! client's does) could hold every slot while they idle, and a newcomer waited in the
//! listen backlog until an idle one's header-read timeout closed it: the accept
//! benchmark's requests at 2,000 req/s that timed out. The process holds at most one
//! connection beyond the bound (the one waiting for room).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use axum::Router;
use hyper::service::Service as _;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
/// The bounds on the API's connections.
#[derive(Debug, Clone, clap::Args)]
pub struct HttpLimits {
    /// Seconds a client has to send a request's headers (a new connection's first request
    /// and each later one on a kept-alive connection); then its connection is closed.
    #[arg(long, env = "HEADER_READ_TIMEOUT_SECS", default_value_t = 10)]
    pub header_read_timeout_secs: u64,
    /// Most connections served at once (event streams included). A connection beyond it
    /// asks those held to close after their current request (those with a request in hand
    /// first) until one has; more wait in the listen backlog meanwhile.
    #[arg(long, env = "MAX_CONNECTIONS", default_value_t = 1024)]
    pub max_connections: usize,
    /// At the bound, milliseconds a new connection waits for the connection asked to close
    /// before it asks the next (the one asked may be busy with a long request or hold an
    /// event stream). Shorter closes more connections than needed under load.
    #[arg(long, env = "ROOM_ASK_INTERVAL_MS", default_value_t = 1000)]
    pub room_ask_interval_ms: u64,
}

/// How long shutdown waits for open connections before it cuts them: a request in flight
/// finishes; an event stream, which has no end of its own, is cut at this bound.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);

/// Serves `app` on `listener` within `limits` until `shutdown`, then drains the open
/// connections.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    limits: &HttpLimits,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let slots = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let held = Arc::new(Held::default());
    let ask_interval = Duration::from_millis(limits.room_ask_interval_ms.max(1));
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(Duration::from_secs(limits.header_read_timeout_secs.max(1)));
    let connections = TaskTracker::new();
    loop {
        // A free slot waits for its connection; a connection beyond the bound waits here for
        // room, and further ones wait in the kernel's backlog, costing this process nothing.
        let (stream, _peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    // Out of file descriptors and the like: pause instead of spinning.
                    tracing::warn!("accepting a connection failed: {error}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            () = shutdown.cancelled() => break,
        };
        let slot = match slots.clone().try_acquire_owned() {
            Ok(slot) => slot,
            Err(_) => match room(&slots, &held, ask_interval, &shutdown).await {
                Some(slot) => slot,
                None => break,
            },
        };
        let _ = stream.set_nodelay(true);
        let (id, this) = held.add();
        // The router, marking the connection as having a request in hand until the answer
        // is ready.
        let service = {
            let (app, this) = (TowerToHyperService::new(app.clone()), this.clone());
            hyper::service::service_fn(move |request| {
                this.in_request.store(true, Ordering::Relaxed);
                let (answer, this) = (app.call(request), this.clone());
                async move {
                    let response = answer.await;
                    this.in_request.store(false, Ordering::Relaxed);
                    response
                }
            })
        };
        let connection = http.serve_connection(TokioIo::new(stream), service);
        let (held, shutdown) = (held.clone(), shutdown.clone());
        connections.spawn(async move {
            let mut connection = std::pin::pin!(connection);
            let ended = tokio::select! {
                ended = connection.as_mut() => ended,
                () = this.close.notified() => {
                    connection.as_mut().graceful_shutdown();
                    connection.await
                }
                () = shutdown.cancelled() => {
                    connection.as_mut().graceful_shutdown();
                    connection.await
                }
            };
            if let Err(error) = ended {
                tracing::debug!("connection ended: {error}");
            }
            held.remove(id);
            drop(slot);
        });
    }
    drop(listener);
    connections.close();
    if tokio::time::timeout(DRAIN_TIMEOUT, connections.wait())
        .await
        .is_err()
    {
        tracing::warn!("connections still open {DRAIN_TIMEOUT:?} after shutdown; leaving them");
    }
    Ok(())
}

/// One connection held, as [`room`] sees it.
#[derive(Default)]
struct Connection {
    /// A request is in hand: its answer is not yet on its way.
    in_request: AtomicBool,
    /// It was asked to close after its current request.
    asked: AtomicBool,
    /// Wakes it to close after its current request.
    close: Notify,
}

/// The connections held, oldest first (by the order they were accepted in).
#[derive(Default)]
struct Held {
    connections: Mutex<BTreeMap<u64, Arc<Connection>>>,
    next_id: AtomicU64,
}

impl Held {
    /// A connection just accepted: its id and its state.
    fn add(&self) -> (u64, Arc<Connection>) {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let connection = Arc::new(Connection::default());
        self.lock().insert(id, connection.clone());
        (id, connection)
    }

    /// A connection that has ended.
    fn remove(&self, id: u64) {
        self.lock().remove(&id);
    }

    /// Asks one connection not asked yet to close after its current request: the oldest
    /// with a request in hand, else the oldest idle one. Whether there was one to ask.
    fn ask_one(&self) -> bool {
        let connections = self.lock();
        let not_asked = || {
            connections
                .values()
                .filter(|connection| !connection.asked.load(Ordering::Relaxed))
        };
        let pick = not_asked()
            .find(|connection| connection.in_request.load(Ordering::Relaxed))
            .or_else(|| not_asked().next());
        match pick {
            Some(connection) => {
                connection.asked.store(true, Ordering::Relaxed);
                connection.close.notify_one();
                true
            }
            None => false,
        }
    }

    fn lock(&self) -> MutexGuard<'_, BTreeMap<u64, Arc<Connection>>> {
        self.connections
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

/// A slot for a connection beyond the bound: asks the connections held to close after
/// their current request ([`Held::ask_one`]), the next one whenever `ask_interval` passes
/// without a slot coming free. `None` on shutdown.
async fn room(
    slots: &Arc<Semaphore>,
    held: &Held,
    ask_interval: Duration,
    shutdown: &CancellationToken,
) -> Option<OwnedSemaphorePermit> {
    loop {
        held.ask_one();
        tokio::select! {
            slot = slots.clone().acquire_owned() => return slot.ok(),
            () = tokio::time::sleep(ask_interval) => {}
            () = shutdown.cancelled() => return None,
        }
    }
}
