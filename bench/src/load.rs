//! Load the benchmarks put on order-api: a closed loop ([`Orderer`]: a fixed number of
//! requests in flight, each sent when one is answered) and an open loop ([`open_loop`]:
//! requests sent on a fixed schedule whether or not the earlier ones were answered, so
//! queueing shows in the latencies instead of slowing the load down).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use provisioner_api_client::ApiClient;
use provisioner_tests::{Stack, VENDORS};
use reqwest::Method;

/// Posts orders (round-robin over the vendors) until `claimed` reaches `target`.
pub struct Orderer {
    target: Arc<AtomicUsize>,
    claimed: Arc<AtomicUsize>,
    accepted: Arc<AtomicUsize>,
    refused: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
    workers: Vec<tokio::task::JoinHandle<()>>,
}

impl Orderer {
    pub fn start(stack: &Stack, concurrency: usize, target: usize) -> Self {
        let target = Arc::new(AtomicUsize::new(target));
        let claimed = Arc::new(AtomicUsize::new(0));
        let accepted = Arc::new(AtomicUsize::new(0));
        let refused = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let workers = (0..concurrency)
            .map(|_| {
                let api = stack.api();
                let (target, claimed) = (target.clone(), claimed.clone());
                let (accepted, refused, stop) = (accepted.clone(), refused.clone(), stop.clone());
                tokio::spawn(async move {
                    while !stop.load(Ordering::SeqCst) {
                        let next = claimed.load(Ordering::SeqCst);
                        let free = next < target.load(Ordering::SeqCst);
                        if !free
                            || claimed
                                .compare_exchange(
                                    next,
                                    next + 1,
                                    Ordering::SeqCst,
                                    Ordering::SeqCst,
                                )
                                .is_err()
                        {
                            if !free {
                                tokio::time::sleep(Duration::from_millis(20)).await;
                            }
                            continue;
                        }
                        let fixture = &VENDORS[next % VENDORS.len()];
                        let body = fixture.order_body(&format!("bench-{next}"));
                        let answer = api.post_order_body(body, None).await;
                        match answer {
                            Ok(response) if response.status() == 202 => {
                                accepted.fetch_add(1, Ordering::SeqCst)
                            }
                            _ => refused.fetch_add(1, Ordering::SeqCst),
                        };
                    }
                })
            })
            .collect();
        Self {
            target,
            claimed,
            accepted,
            refused,
            stop,
            workers,
        }
    }

    /// Orders posted so far (answered or not).
    pub fn posted(&self) -> usize {
        self.claimed.load(Ordering::SeqCst)
    }

    pub fn set_target(&self, target: usize) {
        self.target.fetch_max(target, Ordering::SeqCst);
    }

    /// Stops ordering once the requests on their way are answered; returns (accepted,
    /// refused).
    pub async fn stop(self) -> (usize, usize) {
        self.stop.store(true, Ordering::SeqCst);
        for worker in self.workers {
            let _ = worker.await;
        }
        (
            self.accepted.load(Ordering::SeqCst),
            self.refused.load(Ordering::SeqCst),
        )
    }
}

/// What one request of an open loop gave.
#[derive(Debug, Clone, Copy)]
pub struct Answer {
    /// When the request was due by the loop's schedule, on the wall clock.
    pub due: std::time::SystemTime,
    /// From when the request was due (not when it was sent: a late send counts against
    /// the server, as a user's request would) to the whole answer read.
    pub latency: Duration,
    /// How it ended.
    pub outcome: Outcome,
}

impl Answer {
    /// Whether the answer was the expected status.
    pub fn expected(&self) -> bool {
        self.outcome == Outcome::Expected
    }
}

/// How a request of an open loop ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Answered with the expected status.
    Expected,
    /// Answered with another status.
    OtherStatus(u16),
    /// Unanswered within the time-out.
    TimedOut,
    /// The connection failed before a whole answer (refused, reset, closed under it).
    ConnectionError,
}

/// Sends `POST /v1/orders` of `api` with `body(i)` at `rate` requests per second for
/// `duration`, on schedule; returns each answer in order of sending. Requests still
/// unanswered after `timeout` count as unexpected, with the timeout as their latency.
pub async fn open_loop(
    api: &ApiClient,
    body: impl Fn(usize) -> String,
    rate: u32,
    duration: Duration,
    expected_status: u16,
    timeout: Duration,
) -> Vec<Answer> {
    let total = (f64::from(rate) * duration.as_secs_f64()).round() as usize;
    let interval = Duration::from_secs_f64(1.0 / f64::from(rate.max(1)));
    let start = tokio::time::Instant::now() + Duration::from_millis(20);
    let start_on_wall_clock = std::time::SystemTime::now() + Duration::from_millis(20);
    let mut requests = Vec::with_capacity(total);
    for i in 0..total {
        let due = start + interval * i as u32;
        let due_on_wall_clock = start_on_wall_clock + interval * i as u32;
        tokio::time::sleep_until(due).await;
        let request = api
            .request(Method::POST, "/v1/orders")
            .header("content-type", "application/json")
            .body(body(i))
            .timeout(timeout);
        let answer = tokio::spawn(async move {
            let answer = async {
                let response = request.send().await?;
                let status = response.status().as_u16();
                response.bytes().await?;
                Ok::<_, reqwest::Error>(status)
            }
            .await;
            let outcome = match answer {
                Ok(status) if status == expected_status => Outcome::Expected,
                Ok(status) => Outcome::OtherStatus(status),
                Err(error) if error.is_timeout() => Outcome::TimedOut,
                Err(_) => Outcome::ConnectionError,
            };
            Answer {
                due: due_on_wall_clock,
                latency: due.elapsed(),
                outcome,
            }
        });
        requests.push((due_on_wall_clock, answer));
    }
    let mut answers = Vec::with_capacity(total);
    for (due, request) in requests {
        answers.push(request.await.unwrap_or(Answer {
            due,
            latency: timeout,
            outcome: Outcome::TimedOut,
        }));
    }
    answers
}
