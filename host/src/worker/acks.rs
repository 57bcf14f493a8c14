//! The acks of one consuming channel, sent in batches: a finished delivery is not acked on
//! its own at once but handed to the channel's [`Acks`], which acks a run of finished
//! deliveries with one `basic.ack` carrying `multiple` (RabbitMQ settles them as one
//! command: on a quorum queue one Raft entry instead of one per delivery; `bench` measured
//! about 40 us of broker CPU saved per delivery, see BENCHMARKS.md).
//!
//! # Why a batch acks nothing it should not
//!
//! `multiple` acks every unacked delivery of the channel up to the tag, so a batch may only
//! reach as far as every delivery below it is settled. The [`Ledger`] keeps, per channel,
//! the tag up to which everything is settled, the finished deliveries above it and the ones
//! settled on their own (a nack, a dead-lettering); a `multiple` ack goes only to the end of
//! the unbroken run above the settled mark. A finished delivery above a gap (one still at
//! work below it) waits at most two batch windows, then is acked on its own, so a slow
//! creation never holds the others' prefetch slots. Every settlement of the channel's
//! deliveries goes through its `Acks` (a settlement elsewhere is reported with
//! [`Acks::settled_elsewhere`]), so the ledger is never wrong about what is unacked.
//!
//! # What waiting costs
//!
//! An ack waits at most [`BATCH_WINDOW`] (two for one above a gap), and a batch is sent at
//! once when half the prefetch has finished, so a small in-flight budget is never starved.
//! A host that dies with acks in its ledger has them redelivered: the same as a host that
//! dies between publishing a result and acking it, which the worker already handles (a
//! redelivery looks for the server before creating, [`super::first_copy`]).

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use lapin::Channel;
use lapin::options::BasicAckOptions;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

/// How long a finished delivery's ack may wait for others to join its batch.
pub(super) const BATCH_WINDOW: Duration = Duration::from_millis(5);

/// One ack frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum AckFrame {
    /// Every unacked delivery up to and including the tag (`multiple`).
    Through(u64),
    /// The one delivery.
    One(u64),
}

/// Which deliveries of one channel are settled, and the ack frames that settle the
/// finished ones.
#[derive(Debug, Default)]
struct Ledger {
    /// Every tag up to and including this one is settled (tags start at 1).
    settled_through: u64,
    /// Finished deliveries above `settled_through`, waiting for their ack, with the
    /// number of flushes each has already waited through.
    finished: BTreeMap<u64, u8>,
    /// Deliveries above `settled_through` settled on their own (acked alone, nacked,
    /// dead-lettered).
    settled_alone: BTreeSet<u64>,
}

impl Ledger {
    /// The delivery `tag` finished and wants its ack.
    fn finish(&mut self, tag: u64) {
        if tag > self.settled_through && !self.settled_alone.contains(&tag) {
            self.finished.entry(tag).or_insert(0);
        }
    }

    /// The delivery `tag` was settled without this ledger (a nack, a dead-lettering).
    fn settled_elsewhere(&mut self, tag: u64) {
        if tag > self.settled_through {
            self.finished.remove(&tag);
            self.settled_alone.insert(tag);
        }
    }

    /// Finished deliveries waiting for their ack.
    fn waiting(&self) -> usize {
        self.finished.len()
    }

    /// The frames that ack the finished deliveries: one `Through` for the unbroken run of
    /// settled-or-finished tags above the mark (if it holds a finished one); those above a
    /// gap are acked `One` by one when they have already waited through a flush, or when
    /// `everything` (the channel is about to close).
    fn flush(&mut self, everything: bool) -> Vec<AckFrame> {
        let mut frames = Vec::new();
        // The run's last finished tag: the `Through` names it, not the run's end, which
        // may be settled already (RabbitMQ closes the channel on an ack of a settled tag).
        let mut last_finished = None;
        loop {
            let next = self.settled_through + 1;
            if self.finished.remove(&next).is_some() {
                last_finished = Some(next);
            } else if !self.settled_alone.remove(&next) {
                break;
            }
            self.settled_through = next;
        }
        if let Some(tag) = last_finished {
            frames.push(AckFrame::Through(tag));
        }
        let overdue: Vec<u64> = self
            .finished
            .iter_mut()
            .filter_map(|(tag, flushes)| {
                *flushes += 1;
                (everything || *flushes > 1).then_some(*tag)
            })
            .collect();
        for tag in overdue {
            self.finished.remove(&tag);
            self.settled_alone.insert(tag);
            frames.push(AckFrame::One(tag));
        }
        frames
    }
}

/// What the ack task hears.
enum Note {
    Finished(u64),
    SettledElsewhere(u64),
    Prefetch(u16),
    Flush(oneshot::Sender<()>),
}

/// A consuming channel's acks: cheap to clone, one per delivery's task.
#[derive(Clone)]
pub(super) struct Acks {
    notes: mpsc::UnboundedSender<Note>,
}

impl Acks {
    /// Starts the ack task of `channel`, consumed with `prefetch`; it ends when the last
    /// `Acks` is dropped, after acking what finished.
    pub(super) fn start(channel: Channel, prefetch: u16) -> Self {
        let (notes, inbox) = mpsc::unbounded_channel();
        tokio::spawn(run(channel, prefetch, inbox));
        Self { notes }
    }

    /// The delivery `tag` is done with: ack it (in a batch, within two windows).
    pub(super) fn ack(&self, tag: u64) {
        // The task ends only when every `Acks` is gone; a closed channel's deliveries are
        // redelivered anyway.
        let _ = self.notes.send(Note::Finished(tag));
    }

    /// The delivery `tag` was settled on its own (a nack, a dead-lettering): no batch may
    /// count on it being unacked.
    pub(super) fn settled_elsewhere(&self, tag: u64) {
        let _ = self.notes.send(Note::SettledElsewhere(tag));
    }

    /// The channel's prefetch changed (a replaced plugin's in-flight budget).
    pub(super) fn set_prefetch(&self, prefetch: u16) {
        let _ = self.notes.send(Note::Prefetch(prefetch));
    }

    /// Acks everything finished now (before the channel closes).
    pub(super) async fn flush(&self) {
        let (done, flushed) = oneshot::channel();
        if self.notes.send(Note::Flush(done)).is_ok() {
            let _ = flushed.await;
        }
    }
}

/// The ack task: collects finished tags, sends a batch when the window closes or half the
/// prefetch is waiting.
async fn run(channel: Channel, mut prefetch: u16, mut inbox: mpsc::UnboundedReceiver<Note>) {
    let mut ledger = Ledger::default();
    let mut deadline: Option<Instant> = None;
    loop {
        let note = match deadline {
            Some(at) => tokio::select! {
                note = inbox.recv() => note,
                () = tokio::time::sleep_until(at) => {
                    send(&channel, ledger.flush(false)).await;
                    deadline = (ledger.waiting() > 0).then(|| Instant::now() + BATCH_WINDOW);
                    continue;
                }
            },
            None => inbox.recv().await,
        };
        match note {
            Some(Note::Finished(tag)) => {
                ledger.finish(tag);
                if ledger.waiting() * 2 >= usize::from(prefetch.max(1)) {
                    send(&channel, ledger.flush(true)).await;
                }
            }
            Some(Note::SettledElsewhere(tag)) => ledger.settled_elsewhere(tag),
            Some(Note::Prefetch(new)) => prefetch = new,
            Some(Note::Flush(done)) => {
                send(&channel, ledger.flush(true)).await;
                let _ = done.send(());
            }
            None => {
                send(&channel, ledger.flush(true)).await;
                return;
            }
        }
        if ledger.waiting() == 0 {
            deadline = None;
        } else if deadline.is_none() {
            deadline = Some(Instant::now() + BATCH_WINDOW);
        }
    }
}

/// Sends the frames; a failure means the channel is gone, and with it the deliveries (they
/// are redelivered).
async fn send(channel: &Channel, frames: Vec<AckFrame>) {
    for frame in frames {
        let (tag, multiple) = match frame {
            AckFrame::Through(tag) => (tag, true),
            AckFrame::One(tag) => (tag, false),
        };
        if let Err(error) = channel.basic_ack(tag, BasicAckOptions { multiple }).await {
            tracing::warn!(tag, multiple, "acking: {error}");
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::AckFrame::{One, Through};
    use super::*;

    #[test]
    fn an_unbroken_run_is_acked_with_one_frame() {
        let mut ledger = Ledger::default();
        for tag in [2, 1, 3] {
            ledger.finish(tag);
        }
        assert_eq!(ledger.flush(false), vec![Through(3)]);
        assert_eq!(ledger.waiting(), 0);
        ledger.finish(4);
        assert_eq!(ledger.flush(false), vec![Through(4)]);
    }

    #[test]
    fn a_batch_never_reaches_past_a_delivery_still_at_work() {
        let mut ledger = Ledger::default();
        for tag in [1, 2, 4, 5] {
            ledger.finish(tag);
        }
        // 3 is at work: 4 and 5 wait one more flush, then go alone.
        assert_eq!(ledger.flush(false), vec![Through(2)]);
        assert_eq!(ledger.flush(false), vec![One(4), One(5)]);
        // When 3 finishes, the mark passes over the ones acked alone.
        ledger.finish(3);
        ledger.finish(6);
        assert_eq!(ledger.flush(false), vec![Through(6)]);
        assert_eq!(ledger.settled_through, 6);
        assert!(ledger.settled_alone.is_empty());
    }

    #[test]
    fn a_gap_that_fills_before_the_second_flush_joins_the_batch() {
        let mut ledger = Ledger::default();
        ledger.finish(2);
        assert_eq!(ledger.flush(false), vec![]);
        ledger.finish(1);
        assert_eq!(ledger.flush(false), vec![Through(2)]);
    }

    #[test]
    fn a_delivery_settled_elsewhere_is_passed_over_and_never_acked() {
        let mut ledger = Ledger::default();
        ledger.finish(1);
        ledger.settled_elsewhere(2);
        ledger.finish(3);
        // Through(3) covers 2, which RabbitMQ no longer counts as unacked: nothing doubled.
        assert_eq!(ledger.flush(false), vec![Through(3)]);
        ledger.settled_elsewhere(5);
        ledger.finish(5);
        assert_eq!(ledger.flush(true), vec![]);
    }

    #[test]
    fn a_flush_of_everything_acks_the_ones_above_a_gap_at_once() {
        let mut ledger = Ledger::default();
        ledger.finish(2);
        ledger.finish(3);
        assert_eq!(ledger.flush(true), vec![One(2), One(3)]);
        assert_eq!(ledger.flush(true), vec![]);
        // 2 and 3 are acked: the batch names 1, the last one it acks.
        ledger.finish(1);
        assert_eq!(ledger.flush(true), vec![Through(1)]);
        assert_eq!(ledger.settled_through, 3);
    }

    /// RabbitMQ's side of one frame: it must name an unacked delivery (else the broker
    /// closes the channel) and may ack only finished ones.
    fn broker_receives(frame: AckFrame, unacked: &mut BTreeSet<u64>, finished: &mut BTreeSet<u64>) {
        let (One(tag) | Through(tag)) = frame;
        assert!(unacked.contains(&tag), "{frame:?} of a settled tag");
        let acked: Vec<u64> = match frame {
            One(tag) => vec![tag],
            Through(tag) => unacked.range(..=tag).copied().collect(),
        };
        for tag in acked {
            assert!(finished.remove(&tag), "{frame:?} acks {tag}, still at work");
            unacked.remove(&tag);
        }
    }

    /// Many random interleavings against a model of the broker: no frame names a settled
    /// delivery or acks one at work, and a flush of everything leaves none finished unacked.
    #[test]
    fn no_frame_acks_a_settled_or_unfinished_delivery() {
        use rand::{Rng, SeedableRng};
        let mut random = rand::rngs::StdRng::seed_from_u64(22);
        for _ in 0..500 {
            let mut ledger = Ledger::default();
            let (mut unacked, mut finished) = (BTreeSet::new(), BTreeSet::new());
            let mut at_work: Vec<u64> = Vec::new();
            let mut next_tag = 1;
            for _ in 0..200 {
                match random.random_range(0..10) {
                    0..=3 => {
                        unacked.insert(next_tag);
                        at_work.push(next_tag);
                        next_tag += 1;
                    }
                    4..=7 if !at_work.is_empty() => {
                        let tag = at_work.swap_remove(random.random_range(0..at_work.len()));
                        if random.random_bool(0.1) {
                            unacked.remove(&tag);
                            ledger.settled_elsewhere(tag);
                        } else {
                            finished.insert(tag);
                            ledger.finish(tag);
                        }
                    }
                    _ => {
                        for frame in ledger.flush(random.random_bool(0.2)) {
                            broker_receives(frame, &mut unacked, &mut finished);
                        }
                    }
                }
            }
            for frame in ledger.flush(true) {
                broker_receives(frame, &mut unacked, &mut finished);
            }
            assert!(
                finished.is_empty(),
                "finished but never acked: {finished:?}"
            );
        }
    }

    #[test]
    fn a_tag_already_settled_is_not_acked_twice() {
        let mut ledger = Ledger::default();
        ledger.finish(1);
        assert_eq!(ledger.flush(false), vec![Through(1)]);
        ledger.finish(1);
        assert_eq!(ledger.flush(true), vec![]);
    }
}
