//! The one bridge between blocking workers and async streams.
//!
//! Parquet and file work runs on blocking threads; gRPC streams are async. They
//! meet in a bounded channel, so a slow consumer slows the producer instead of
//! growing memory, whichever side is the blocking one:
//!
//! - DoGet: a worker reads row groups and sends messages; the gRPC response
//!   stream receives them.
//! - DoPut: an async pump reads the request stream and sends messages; a worker
//!   receives them and writes Parquet.
//! - The CLI's `put` and `get` are the same two shapes seen from the client.
//!
//! A channel ends with an explicit verdict, never by accident: the sender calls
//! [`Sender::finish`] (everything was sent: the receiver sees every item, then
//! [`Next::End`]) or [`Sender::fail`] (the receiver's very next step is
//! [`Next::Failed`], ahead of anything still queued, because an error must win
//! over data: a truncated download must never look complete, an aborted upload
//! must never commit). A sender dropped without a verdict (its thread panicked,
//! its task was cancelled) shows as [`Next::Abandoned`].

use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::sync::mpsc;

/// A bounded channel of `T` that ends with a verdict; `E` is the failure.
pub fn channel<T, E>(depth: usize) -> (Sender<T, E>, Receiver<T, E>) {
    let (tx, rx) = mpsc::channel(depth.max(1));
    let verdict = Arc::new(Mutex::new(Verdict::Open));
    (
        Sender {
            tx,
            verdict: verdict.clone(),
        },
        Receiver {
            rx,
            verdict,
            done: false,
        },
    )
}

enum Verdict<E> {
    Open,
    Finished,
    Failed(E),
    /// The failure was handed to the receiver already.
    Taken,
}

/// Why an item could not be sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SendError {
    /// The receiver is gone: stop producing.
    Closed,
    /// The receiver took nothing for the whole idle timeout.
    Stalled,
}

/// The producing end. Dropping it without [`finish`](Sender::finish) or
/// [`fail`](Sender::fail) abandons the channel.
pub struct Sender<T, E> {
    tx: mpsc::Sender<T>,
    verdict: Arc<Mutex<Verdict<E>>>,
}

impl<T, E> Sender<T, E> {
    /// Sends from async code, waiting while the channel is full.
    pub async fn send(&self, item: T) -> Result<(), SendError> {
        self.tx.send(item).await.map_err(|_| SendError::Closed)
    }

    /// Sends from a blocking thread, waiting while the channel is full; with
    /// `idle`, gives up once the receiver has taken nothing for that long, so
    /// a stalled consumer cannot pin a worker thread forever. Timing needs the
    /// runtime the worker was spawned from (`spawn_blocking` provides it).
    pub fn blocking_send(&self, item: T, idle: Option<Duration>) -> Result<(), SendError> {
        use mpsc::error::SendTimeoutError;
        let Some(idle) = idle else {
            return self.tx.blocking_send(item).map_err(|_| SendError::Closed);
        };
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| SendError::Closed)?;
        runtime
            .block_on(self.tx.send_timeout(item, idle))
            .map_err(|e| match e {
                SendTimeoutError::Timeout(_) => SendError::Stalled,
                SendTimeoutError::Closed(_) => SendError::Closed,
            })
    }

    /// Everything was sent: the receiver drains the queue, then sees the end.
    pub fn finish(self) {
        self.set(Verdict::Finished);
    }

    /// Ends the channel with `err`, which the receiver sees next, ahead of
    /// anything still queued.
    pub fn fail(self, err: E) {
        self.set(Verdict::Failed(err));
    }

    fn set(self, verdict: Verdict<E>) {
        let mut slot = self.verdict.lock().unwrap_or_else(|p| p.into_inner());
        if matches!(*slot, Verdict::Open) {
            *slot = verdict;
        }
        // Dropping `tx` after the verdict is set wakes a waiting receiver.
    }

    /// Resolves once the receiver is gone (the client left, the worker quit).
    pub async fn closed(&self) {
        self.tx.closed().await
    }

    pub fn is_closed(&self) -> bool {
        self.tx.is_closed()
    }
}

/// One step of a [`Receiver`].
#[derive(Debug)]
pub enum Next<T, E> {
    Item(T),
    /// The sender finished: every item has been received.
    End,
    /// The sender failed with this error.
    Failed(E),
    /// The sender went away without a verdict.
    Abandoned,
}

/// The consuming end; also a [`Stream`](tonic::codegen::tokio_stream::Stream)
/// of [`Next`] steps that ends after the first step that is not an item.
pub struct Receiver<T, E> {
    rx: mpsc::Receiver<T>,
    verdict: Arc<Mutex<Verdict<E>>>,
    done: bool,
}

impl<T, E> Receiver<T, E> {
    /// The next step, waiting on a blocking thread.
    pub fn blocking_next(&mut self) -> Next<T, E> {
        if let Some(failed) = self.take_failure() {
            return failed;
        }
        match self.rx.blocking_recv() {
            Some(item) => Next::Item(item),
            None => self.ended(),
        }
    }

    /// [`Receiver::blocking_next`], giving up after `period` (`None`) so the
    /// caller can act while it waits. Outside a tokio runtime it waits as
    /// long as it takes.
    pub fn blocking_next_within(&mut self, period: Duration) -> Option<Next<T, E>> {
        if let Some(failed) = self.take_failure() {
            return Some(failed);
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return Some(self.blocking_next());
        };
        match runtime.block_on(tokio::time::timeout(period, self.rx.recv())) {
            Ok(Some(item)) => Some(Next::Item(item)),
            Ok(None) => Some(self.ended()),
            Err(_) => None,
        }
    }

    /// The next step, from async code.
    pub fn poll_step(&mut self, cx: &mut Context<'_>) -> Poll<Next<T, E>> {
        if let Some(failed) = self.take_failure() {
            return Poll::Ready(failed);
        }
        match self.rx.poll_recv(cx) {
            Poll::Ready(Some(item)) => Poll::Ready(Next::Item(item)),
            Poll::Ready(None) => Poll::Ready(self.ended()),
            Poll::Pending => Poll::Pending,
        }
    }

    /// Stops the sender: its next send fails with [`SendError::Closed`].
    pub fn close(&mut self) {
        self.rx.close();
    }

    fn take_failure(&mut self) -> Option<Next<T, E>> {
        let mut slot = self.verdict.lock().unwrap_or_else(|p| p.into_inner());
        match std::mem::replace(&mut *slot, Verdict::Taken) {
            Verdict::Failed(err) => Some(Next::Failed(err)),
            other => {
                *slot = other;
                None
            }
        }
    }

    /// Every sender is gone and the queue is empty: what did it end with?
    fn ended(&mut self) -> Next<T, E> {
        let mut slot = self.verdict.lock().unwrap_or_else(|p| p.into_inner());
        match std::mem::replace(&mut *slot, Verdict::Taken) {
            Verdict::Finished => {
                *slot = Verdict::Finished;
                Next::End
            }
            Verdict::Failed(err) => Next::Failed(err),
            Verdict::Open | Verdict::Taken => Next::Abandoned,
        }
    }
}

impl<T, E> tonic::codegen::tokio_stream::Stream for Receiver<T, E>
where
    T: Unpin,
    E: Unpin,
{
    type Item = Next<T, E>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Next<T, E>>> {
        if self.done {
            return Poll::Ready(None);
        }
        let step = std::task::ready!(self.poll_step(cx));
        self.done = !matches!(step, Next::Item(_));
        Poll::Ready(Some(step))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn collect<T, E>(rx: &mut Receiver<T, E>) -> (Vec<T>, Next<T, E>) {
        let mut items = Vec::new();
        loop {
            match rx.blocking_next() {
                Next::Item(item) => items.push(item),
                other => return (items, other),
            }
        }
    }

    #[test]
    fn finish_delivers_every_item_then_the_end() {
        let (tx, mut rx) = channel::<u32, String>(4);
        let producer = std::thread::spawn(move || {
            for i in 0..10 {
                tx.blocking_send(i, None).unwrap();
            }
            tx.finish();
        });
        let (items, end) = collect(&mut rx);
        producer.join().unwrap();
        assert_eq!(items, (0..10).collect::<Vec<_>>());
        assert!(matches!(end, Next::End));
    }

    #[test]
    fn a_failure_wins_over_queued_items() {
        let (tx, mut rx) = channel::<u32, String>(4);
        tx.blocking_send(1, None).unwrap();
        tx.blocking_send(2, None).unwrap();
        tx.fail("disk full".into());
        assert!(matches!(rx.blocking_next(), Next::Failed(e) if e == "disk full"));
    }

    #[test]
    fn a_dropped_sender_is_abandoned_not_finished() {
        let (tx, mut rx) = channel::<u32, String>(4);
        tx.blocking_send(7, None).unwrap();
        drop(tx);
        let (items, end) = collect(&mut rx);
        assert_eq!(items, vec![7]);
        assert!(matches!(end, Next::Abandoned));
    }

    #[tokio::test]
    async fn a_stalled_receiver_times_the_sender_out_and_a_gone_one_closes_it() {
        let (tx, mut rx) = channel::<u32, String>(1);
        let idle = Some(Duration::from_millis(50));
        let (tx, stalled) = tokio::task::spawn_blocking(move || {
            tx.blocking_send(1, idle).unwrap();
            let started = std::time::Instant::now();
            let stalled = tx.blocking_send(2, idle);
            assert!(started.elapsed() >= Duration::from_millis(50));
            (tx, stalled)
        })
        .await
        .unwrap();
        assert_eq!(stalled, Err(SendError::Stalled));
        rx.close();
        assert_eq!(tx.send(3).await, Err(SendError::Closed));
    }

    #[tokio::test]
    async fn the_stream_ends_after_its_verdict() {
        use tonic::codegen::tokio_stream::StreamExt;
        let (tx, rx) = channel::<u32, String>(4);
        tx.send(1).await.unwrap();
        tx.finish();
        let steps: Vec<_> = rx.collect().await;
        assert!(matches!(steps.as_slice(), [Next::Item(1), Next::End]));
    }
}
