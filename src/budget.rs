//! The server-wide memory budget (`--memory-limit`): bytes that uploads and
//! downloads hold in flight are drawn from one pool, and returned when freed.
//!
//! DoPut holds the batch it is writing plus the Parquet writer's buffered row
//! group; DoGet holds the batch it encoded and every message queued for the
//! client. When the pool is spent, a worker that asks for more waits (its
//! channel fills, HTTP/2 flow control stops the uploader, a download pauses);
//! past the wait bound it fails with RESOURCE_EXHAUSTED naming the flag, and
//! the call ends like any failed call: an upload keeps the old version, a
//! download ends with the error, never looking complete.
//!
//! Waiting happens on blocking worker threads (Mutex + Condvar), never on the
//! async runtime.
//!
//! The budget also gives memory back: glibc keeps what a burst of streams
//! freed in its arenas, so without help RSS stays at the load's peak. Once the
//! budget has been idle for a moment, [`Budget::trim_when_idle`] returns the
//! free pages to the system.

use std::collections::VecDeque;
use std::fmt;
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, Weak};
use std::task::Waker;
use std::time::{Duration, Instant};

use crate::error::Error;

/// Default `--memory-limit`: room for a few concurrent large streams on a
/// small host (one DoPut row group stays under 32 MiB, one DoGet batch plus
/// its queued messages near 10 MiB).
pub const DEFAULT_LIMIT: u64 = 256 * 1024 * 1024;

/// The pool. Cloning shares it.
#[derive(Debug, Clone)]
pub struct Budget {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    limit: u64,
    used: Mutex<u64>,
    freed: Condvar,
    /// Async waiters (DoPut bodies waiting to take a message in), woken by
    /// every release like the condition variable's blocking ones.
    wakers: Mutex<Vec<Waker>>,
    /// Set by every release, cleared by a trim: nothing to trim unless
    /// something was freed since the last one.
    released: AtomicBool,
}

impl Budget {
    pub fn new(limit: u64) -> Budget {
        Budget {
            inner: Arc::new(Inner {
                limit: limit.max(1),
                used: Mutex::new(0),
                freed: Condvar::new(),
                wakers: Mutex::new(Vec::new()),
                released: AtomicBool::new(false),
            }),
        }
    }

    pub fn limit(&self) -> u64 {
        self.inner.limit
    }

    /// Bytes currently granted.
    pub fn used(&self) -> u64 {
        *self.lock()
    }

    /// Bytes not granted now.
    pub fn free(&self) -> u64 {
        self.inner.limit.saturating_sub(self.used())
    }

    /// An empty grant, to be grown with [`Grant::resize`].
    pub fn empty(&self) -> Grant {
        Grant {
            budget: self.clone(),
            bytes: 0,
        }
    }

    /// Takes `bytes` from the pool, waiting up to `wait` for them.
    pub fn acquire(&self, bytes: u64, wait: Duration) -> Result<Grant, Error> {
        self.acquire_while(bytes, wait, &|| true)
    }

    /// [`Budget::acquire`], giving up (CANCELLED) as soon as `wanted` says the
    /// bytes are no longer needed, e.g. because the client left: a call whose
    /// client is gone must not keep its call slot while it waits.
    pub fn acquire_while(
        &self,
        bytes: u64,
        wait: Duration,
        wanted: &dyn Fn() -> bool,
    ) -> Result<Grant, Error> {
        let mut grant = self.empty();
        grant.resize_while(bytes, wait, wanted)?;
        Ok(grant)
    }

    /// Takes `bytes` (at most the whole limit) if they are free now; never
    /// waits. For async callers, which pair it with [`Budget::wake_on_release`].
    pub fn try_acquire(&self, bytes: u64) -> Option<Grant> {
        let want = bytes.min(self.inner.limit);
        let mut used = self.lock();
        if *used + want > self.inner.limit {
            return None;
        }
        *used += want;
        Some(Grant {
            budget: self.clone(),
            bytes: want,
        })
    }

    /// Wakes `waker` at the next release of any bytes. A caller registers,
    /// then tries once more, so a release between its failed try and the
    /// registration is not missed.
    pub fn wake_on_release(&self, waker: &Waker) {
        let mut wakers = self.inner.wakers.lock().unwrap_or_else(|p| p.into_inner());
        if !wakers.iter().any(|w| w.will_wake(waker)) {
            wakers.push(waker.clone());
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, u64> {
        // The counter stays consistent even if a holder panicked: every
        // change is one assignment under the lock.
        self.inner.used.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn release(&self, bytes: u64) {
        if bytes == 0 {
            return;
        }
        let mut used = self.lock();
        *used = used.saturating_sub(bytes);
        drop(used);
        self.inner.released.store(true, Ordering::Relaxed);
        self.inner.freed.notify_all();
        let waiting =
            std::mem::take(&mut *self.inner.wakers.lock().unwrap_or_else(|p| p.into_inner()));
        for waker in waiting {
            waker.wake();
        }
    }

    /// Calls `trim` if something was released since the last trim and
    /// nothing is held now; says whether it did.
    fn trim_if_idle(&self, trim: impl FnOnce()) -> bool {
        let idle = *self.lock() == 0;
        if idle && self.inner.released.swap(false, Ordering::Relaxed) {
            trim();
            return true;
        }
        false
    }

    /// Starts a thread that, every `period`, returns freed heap memory to the
    /// system if streams freed some and none holds any now. It ends when the
    /// last clone of the budget is dropped.
    pub fn trim_when_idle(&self, period: Duration) {
        let weak: Weak<Inner> = Arc::downgrade(&self.inner);
        let spawned = std::thread::Builder::new()
            .name("hangar-trim".into())
            .spawn(move || loop {
                std::thread::sleep(period);
                let Some(inner) = weak.upgrade() else { return };
                Budget { inner }.trim_if_idle(release_free_memory);
            });
        // Without the thread the server still works; RSS just stays higher.
        drop(spawned);
    }
}

/// Sets the allocator up for a server that should give memory back: one
/// glibc malloc arena instead of 8 per CPU. Every arena keeps its own free
/// lists, so with 64 clients served by many blocking threads, memory freed in
/// one arena is never reused by another and trimming leaves scattered pages
/// behind. Measured with the 64-client soak on 2 CPUs, 5 s after the load:
/// RSS 169 MiB with glibc's defaults, 59 MiB with idle trimming alone, 28 MiB
/// with 2 arenas, 23 MiB with one (idle 8 MiB; 5 MiB of the rest is code
/// paged in by the load). One arena cost nothing measurable: soak calls/s
/// 740-743 vs 752-774 (run-to-run noise is larger), single pyarrow DoGets
/// 1.51-1.53 s vs 1.66-1.75 s for 8 of 288 MB. Call before the runtime starts
/// its threads.
pub fn configure_allocator() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: mallopt only changes the allocator's settings; a refusal
        // (return 0) leaves glibc's defaults, which work, just keep more.
        unsafe {
            libc::mallopt(libc::M_ARENA_MAX, 1);
            libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD);
        }
    }
}

/// Allocations from this size up get their own mapping, returned to the
/// system when freed. glibc's default threshold rises with every large block
/// freed (up to 32 MiB), after which uploads' multi-megabyte messages come
/// from the heap and their freed blocks stay resident between calls: 16
/// uploads of 16 MiB messages under a 64 MiB limit held 157 MiB of heap but
/// 481-519 MiB of RSS. Streams' usual buffers (pages, batches, 2 MiB
/// messages) stay below it.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
const MMAP_THRESHOLD: libc::c_int = 4 * 1024 * 1024;

/// Hands the allocator's free pages back to the kernel (glibc `malloc_trim`,
/// which unlike the automatic trim also walks every thread's arena, where
/// streams running on blocking threads freed their buffers).
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn release_free_memory() {
    // SAFETY: malloc_trim only takes the allocator's own locks.
    unsafe {
        libc::malloc_trim(0);
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn release_free_memory() {}

/// How often a wait for memory checks that it is still wanted.
const WAIT_SLICE: Duration = Duration::from_millis(200);

/// Bytes held from a [`Budget`]; dropping the grant returns them.
#[derive(Debug)]
pub struct Grant {
    budget: Budget,
    bytes: u64,
}

impl Grant {
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// Makes this grant hold `bytes`. Shrinking never waits. Growing waits up
    /// to `wait` for the difference, then fails, keeping what it held.
    ///
    /// A grant never holds more than the whole limit: a single batch or row
    /// group larger than the budget still goes through, but only once it has
    /// the pool to itself, so one large item is slow rather than impossible.
    pub fn resize(&mut self, bytes: u64, wait: Duration) -> Result<(), Error> {
        self.resize_while(bytes, wait, &|| true)
    }

    /// [`Grant::resize`], giving up (CANCELLED) once `wanted` turns false; it
    /// is asked at least every [`WAIT_SLICE`].
    pub fn resize_while(
        &mut self,
        bytes: u64,
        wait: Duration,
        wanted: &dyn Fn() -> bool,
    ) -> Result<(), Error> {
        let limit = self.budget.inner.limit;
        let want = bytes.min(limit);
        if want <= self.bytes {
            self.budget.release(self.bytes - want);
            self.bytes = want;
            return Ok(());
        }
        let more = want - self.bytes;
        let deadline = Instant::now() + wait;
        let mut used = self.budget.lock();
        while *used + more > limit {
            let now = Instant::now();
            if now >= deadline {
                return Err(Error::ResourceExhausted(format!(
                    "the server's memory budget is spent: {more} more bytes were not free \
                     within {} s ({} of {limit} bytes in use by other calls; \
                     raise --memory-limit or retry later)",
                    wait.as_secs(),
                    *used
                )));
            }
            used = self
                .budget
                .inner
                .freed
                .wait_timeout(used, (deadline - now).min(WAIT_SLICE))
                .unwrap_or_else(|p| p.into_inner())
                .0;
            if !wanted() {
                return Err(Error::Cancelled(
                    "the client went away while the call waited for memory".into(),
                ));
            }
        }
        *used += more;
        self.bytes = want;
        Ok(())
    }

    /// Makes this grant hold `bytes` at once, even past the limit: for memory
    /// that is already allocated (a batch just encoded, a writer's buffers
    /// after a write), which waiting could not free. Only new work waits.
    pub fn hold_now(&mut self, bytes: u64) {
        let want = bytes.min(self.budget.inner.limit);
        if want <= self.bytes {
            self.budget.release(self.bytes - want);
        } else {
            *self.budget.lock() += want - self.bytes;
        }
        self.bytes = want;
    }

    /// Moves up to `bytes` of this grant into a new one, without waiting: the
    /// memory changes hands (a batch's bytes become its encoded messages').
    pub fn split(&mut self, bytes: u64) -> Grant {
        let moved = bytes.min(self.bytes);
        self.bytes -= moved;
        Grant {
            budget: self.budget.clone(),
            bytes: moved,
        }
    }
}

impl Grant {
    /// Whether the whole pool is in use (by this grant or others).
    pub fn pool_is_spent(&self) -> bool {
        self.budget.used() >= self.budget.limit()
    }

    /// Takes over `other`'s bytes, without touching the pool: a received
    /// message's bytes become the batch decoded from them.
    pub fn absorb(&mut self, mut other: Grant) {
        self.bytes += std::mem::take(&mut other.bytes);
    }
}

/// The budget's share of one DoPut's incoming messages, shared by the
/// transport and the writer. The transport accounts for tonic's receive
/// buffer before a message's bytes are read off HTTP/2 (so an upload that
/// cannot have the memory is held back by flow control): the buffer is
/// reused while every earlier message has been consumed, and a new one is
/// allocated while one is still held. The bytes of a buffer still held by
/// earlier messages travel, as a grant, with the next message, and are
/// returned when the writer has consumed it. Without this, messages being
/// received or queued, and the buffer tonic keeps between messages, were
/// outside the budget: 24 uploads of 40 MiB messages took the server to
/// 1.3-1.6 GB of RSS under the default 256 MiB limit.
#[derive(Debug, Clone, Default)]
pub struct Inbound(Arc<InboundInner>);

#[derive(Debug, Default)]
struct InboundInner {
    grants: Mutex<VecDeque<Grant>>,
    /// Messages the writer has consumed (decoded and let go of).
    consumed: std::sync::atomic::AtomicU64,
    /// The transport, waiting for a consumed message to free tonic's buffer.
    waker: Mutex<Option<Waker>>,
    /// The transport holds a message back because the budget is spent.
    waiting: AtomicBool,
}

impl Inbound {
    /// The grant that travels with the oldest message not yet taken.
    pub fn next_message(&self) -> Option<Grant> {
        self.grants().pop_front()
    }

    /// The writer is done with one more message (its bytes may be freed).
    pub fn consumed_one(&self) {
        self.0.consumed.fetch_add(1, Ordering::SeqCst);
        let waker = self
            .0
            .waker
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        if let Some(waker) = waker {
            waker.wake();
        }
    }

    /// Wakes `waker` when the writer next consumes a message.
    pub fn wake_when_consumed(&self, waker: &Waker) {
        *self.0.waker.lock().unwrap_or_else(|p| p.into_inner()) = Some(waker.clone());
    }

    pub fn consumed(&self) -> u64 {
        self.0.consumed.load(Ordering::SeqCst)
    }

    /// Queues the grants of messages whose headers just arrived.
    pub fn arrived(&self, grants: impl IntoIterator<Item = Grant>) {
        self.grants().extend(grants);
    }

    /// Whether the transport is holding a message back for memory (so a
    /// stalled upload is reported as the budget's doing, not the client's).
    pub fn waiting_for_memory(&self) -> bool {
        self.0.waiting.load(Ordering::SeqCst)
    }

    pub fn set_waiting(&self, waiting: bool) {
        self.0.waiting.store(waiting, Ordering::SeqCst);
    }

    fn grants(&self) -> std::sync::MutexGuard<'_, VecDeque<Grant>> {
        self.0.grants.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Drop for Grant {
    fn drop(&mut self) {
        self.budget.release(self.bytes);
    }
}

/// A byte count as given on the command line: a plain number, or one with a
/// binary (`KiB`, `MiB`, `GiB`) or decimal (`KB`, `MB`, `GB`) unit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ByteSize(pub u64);

impl FromStr for ByteSize {
    type Err = String;

    fn from_str(text: &str) -> Result<ByteSize, String> {
        let text = text.trim();
        let split = text
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(text.len());
        let (digits, unit) = text.split_at(split);
        if digits.is_empty() {
            return Err("expected a number of bytes, e.g. 268435456, 256MiB or 1GiB".into());
        }
        let number: u64 = digits.parse().map_err(|e| format!("{e}"))?;
        let scale: u64 = match unit.trim() {
            "" | "B" => 1,
            "KiB" => 1 << 10,
            "MiB" => 1 << 20,
            "GiB" => 1 << 30,
            "TiB" => 1 << 40,
            "KB" | "kB" => 1_000,
            "MB" => 1_000_000,
            "GB" => 1_000_000_000,
            "TB" => 1_000_000_000_000,
            other => {
                return Err(format!(
                    "unknown unit '{other}' (use B, KiB, MiB, GiB, TiB, KB, MB, GB or TB)"
                ))
            }
        };
        number
            .checked_mul(scale)
            .map(ByteSize)
            .ok_or_else(|| "too large".into())
    }
}

impl fmt::Display for ByteSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tonic::Code;

    const NO_WAIT: Duration = Duration::ZERO;

    #[test]
    fn grants_return_their_bytes_when_dropped_or_shrunk() {
        let budget = Budget::new(100);
        let mut a = budget.acquire(60, NO_WAIT).unwrap();
        let b = budget.acquire(40, NO_WAIT).unwrap();
        assert_eq!(budget.used(), 100);
        a.resize(10, NO_WAIT).unwrap();
        assert_eq!(budget.used(), 50);
        drop(b);
        assert_eq!(budget.used(), 10);
        drop(a);
        assert_eq!(budget.used(), 0);
    }

    #[test]
    fn a_wait_that_is_no_longer_wanted_ends_at_once_as_cancelled() {
        let budget = Budget::new(100);
        let _held = budget.acquire(100, NO_WAIT).unwrap();
        let gone = std::sync::atomic::AtomicBool::new(false);
        std::thread::scope(|scope| {
            let waiter = scope.spawn(|| {
                budget.acquire_while(10, Duration::from_secs(3600), &|| {
                    !gone.load(std::sync::atomic::Ordering::SeqCst)
                })
            });
            gone.store(true, std::sync::atomic::Ordering::SeqCst);
            // Bounded by WAIT_SLICE, not by the hour asked for.
            let err = waiter.join().unwrap().unwrap_err();
            assert_eq!(err.code(), Code::Cancelled);
        });
        assert_eq!(budget.used(), 100);
    }

    #[test]
    fn a_spent_budget_refuses_past_the_wait_naming_the_flag_and_keeps_what_was_held() {
        let budget = Budget::new(100);
        let _held = budget.acquire(80, NO_WAIT).unwrap();
        let mut mine = budget.acquire(20, NO_WAIT).unwrap();
        let err = mine.resize(21, NO_WAIT).unwrap_err();
        assert_eq!(err.code(), Code::ResourceExhausted);
        assert!(err.message().contains("--memory-limit"), "{err}");
        assert_eq!(mine.bytes(), 20);
        assert_eq!(budget.used(), 100);
        let err = budget.acquire(1, NO_WAIT).unwrap_err();
        assert_eq!(err.code(), Code::ResourceExhausted);
    }

    #[test]
    fn a_waiter_gets_the_bytes_once_another_grant_frees_them() {
        let budget = Budget::new(100);
        let held = budget.acquire(100, NO_WAIT).unwrap();
        let (started_tx, started_rx) = std::sync::mpsc::channel();
        let waiter = {
            let budget = budget.clone();
            std::thread::spawn(move || {
                started_tx.send(()).unwrap();
                // Long enough never to run out in a test: the release below
                // is what ends the wait.
                budget.acquire(70, Duration::from_secs(600))
            })
        };
        started_rx.recv().unwrap();
        drop(held);
        let grant = waiter.join().unwrap().unwrap();
        assert_eq!(grant.bytes(), 70);
        assert_eq!(budget.used(), 70);
    }

    #[test]
    fn an_item_larger_than_the_limit_takes_the_whole_pool_instead_of_failing() {
        let budget = Budget::new(100);
        let big = budget.acquire(1_000, NO_WAIT).unwrap();
        assert_eq!(big.bytes(), 100);
        assert!(budget.acquire(1, NO_WAIT).is_err());
        drop(big);
        assert_eq!(budget.used(), 0);
    }

    #[test]
    fn holding_what_is_already_allocated_never_waits_but_makes_others_wait() {
        let budget = Budget::new(100);
        let _other = budget.acquire(90, NO_WAIT).unwrap();
        let mut mine = budget.empty();
        mine.hold_now(50);
        assert_eq!(budget.used(), 140);
        assert!(budget.acquire(1, NO_WAIT).is_err());
        mine.hold_now(500);
        assert_eq!(mine.bytes(), 100);
        mine.hold_now(0);
        assert_eq!(budget.used(), 90);
    }

    #[test]
    fn split_moves_bytes_between_grants_without_changing_the_total() {
        let budget = Budget::new(100);
        let mut batch = budget.acquire(90, NO_WAIT).unwrap();
        let message = batch.split(30);
        assert_eq!((batch.bytes(), message.bytes()), (60, 30));
        assert_eq!(budget.used(), 90);
        let rest = batch.split(500);
        assert_eq!((batch.bytes(), rest.bytes()), (0, 60));
        drop((message, rest, batch));
        assert_eq!(budget.used(), 0);
    }

    #[test]
    fn memory_is_trimmed_once_after_a_release_and_only_when_nothing_is_held() {
        let budget = Budget::new(100);
        let trims = std::cell::Cell::new(0);
        let trim = || trims.set(trims.get() + 1);
        assert!(!budget.trim_if_idle(trim), "nothing was ever freed");
        let a = budget.acquire(10, NO_WAIT).unwrap();
        let b = budget.acquire(10, NO_WAIT).unwrap();
        drop(a);
        assert!(!budget.trim_if_idle(trim), "a stream still holds memory");
        drop(b);
        assert!(budget.trim_if_idle(trim));
        assert!(
            !budget.trim_if_idle(trim),
            "nothing freed since the last trim"
        );
        assert_eq!(trims.get(), 1);
    }

    #[test]
    fn byte_sizes_accept_plain_numbers_and_units() {
        let parse = |s: &str| s.parse::<ByteSize>().map(|b| b.0);
        assert_eq!(parse("1048576"), Ok(1 << 20));
        assert_eq!(parse("256MiB"), Ok(256 << 20));
        assert_eq!(parse("1GiB"), Ok(1 << 30));
        assert_eq!(parse("64KiB"), Ok(64 << 10));
        assert_eq!(parse("2GB"), Ok(2_000_000_000));
        assert!(parse("MiB").is_err());
        assert!(parse("12 parsecs").unwrap_err().contains("unknown unit"));
        assert!(parse("99999999999TiB").is_err());
    }
}
