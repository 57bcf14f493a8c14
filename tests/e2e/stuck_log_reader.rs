//! A reader of a program's stdout that stops reading (a log collector, or a container
//! runtime's logging driver, that is stuck) must not stop the program: the log writer holds
//! lines for the reader, then drops them, rather than make the code that logs wait
//! (`provisioner_process::init_logging`).

use std::time::Duration;

use anyhow::Context;
use provisioner_tests::{Stack, StackOptions, VENDORS};

/// Orders posted to an order-api whose log nobody reads: at `info` each order makes a few
/// lines there (accepted with its id, vendor and `traceparent`; moved as the host reports),
/// so these fill a 64 KiB pipe some ten times over (before the fix, the 140th order was the
/// first unanswered).
const ORDERS: usize = 1_500;

/// How long one order may take to be answered before order-api counts as stopped.
const ANSWER_WITHIN: Duration = Duration::from_secs(15);

/// Every order is answered `202` though order-api's stdout and stderr go to pipes nobody
/// reads (before the log writer had a thread of its own, the order whose line found the pipe
/// full was never answered, nor any after it).
#[tokio::test]
async fn order_api_answers_while_nobody_reads_its_log() -> anyhow::Result<()> {
    let mut stack = Stack::start(StackOptions::default()).await?;
    stack.restart_api_with_unread_output().await?;
    let api = stack.api();
    for i in 0..ORDERS {
        let body = VENDORS[i % VENDORS.len()].order_body(&format!("unread-log-{i}"));
        let answer = tokio::time::timeout(ANSWER_WITHIN, api.post_order_body(body, None))
            .await
            .with_context(|| {
                format!(
                    "order {i} of {ORDERS} was not answered within {ANSWER_WITHIN:?}: order-api \
                     stopped once the pipe of its log was full\n{}",
                    stack.logs()
                )
            })??;
        let status = answer.status();
        assert_eq!(status, 202, "order {i}: {}", answer.text().await?);
    }
    Ok(())
}
