//! The store's own thread: every sled call of the daemon runs here, never on
//! the async runtime's threads.
//!
//! The async side holds a [`StoreHandle`] and sends the thread closures that
//! take `&Store` ([`StoreHandle::call`]); it awaits their answers. One thread
//! runs them one after the other, in the order sent, so no sled batch ever
//! races a transaction, and a slow disk (or a stalled sled call) holds only
//! this thread: the HTTP server, the event stream and the HA elector go on.
//!
//! Group commit: [`StoreHandle::flush`] asks for durability of everything sent
//! before it. The store thread passes the request to a flusher thread of its
//! own once every closure sent before it has run; the flusher makes one flush
//! for every request waiting, so a burst of writers that each want their
//! writes durable shares one fsync, and the store thread goes on serving
//! reads and writes while the disk syncs (sled's flush runs beside writes;
//! one flush at a time, so sled's I/O threads are never all taken by flushes).
//!
//! Invariants:
//! - Only this thread touches the `Store` it owns.
//! - A closure's answer is sent only after it returned; a flush's answer only
//!   after `sled::Db::flush` returned, and it covers every closure sent before
//!   the flush request.

use std::sync::mpsc;
use std::sync::{Arc, Condvar, Mutex};

use tokio::sync::oneshot;

use super::{Error, Store};

type Job = Box<dyn FnOnce(&Store) + Send>;

enum Message {
    Run(Job),
    Flush(oneshot::Sender<Result<(), String>>),
}

/// The async side's handle on the store thread. Cloning it is cheap; the
/// thread ends when the last handle is dropped.
#[derive(Clone)]
pub struct StoreHandle {
    tx: mpsc::Sender<Message>,
    hold: Arc<HoldState>,
}

/// A test hook: while a [`Hold`] lives, the store thread runs nothing.
#[derive(Default)]
struct HoldState {
    held: Mutex<usize>,
    released: Condvar,
}

/// Holds the store thread until dropped (tests: a stalled disk).
pub struct Hold {
    state: Arc<HoldState>,
}

impl Drop for Hold {
    fn drop(&mut self) {
        let mut held = self.state.held.lock().unwrap_or_else(|p| p.into_inner());
        *held = held.saturating_sub(1);
        self.state.released.notify_all();
    }
}

/// Why a call did not run: the store thread is gone (it panicked, or the
/// daemon is shutting down).
fn gone() -> Error {
    Error::Thread("the store thread has stopped".into())
}

impl StoreHandle {
    /// Moves `store` onto a thread of its own.
    pub fn spawn(store: Store) -> Result<StoreHandle, Error> {
        let (tx, rx) = mpsc::channel::<Message>();
        let hold = Arc::new(HoldState::default());
        let held = hold.clone();
        let (flush_tx, flush_rx) = mpsc::channel::<oneshot::Sender<Result<(), String>>>();
        let flusher = store.clone();
        let flusher_held = hold.clone();
        std::thread::Builder::new()
            .name("store-flush".into())
            .spawn(move || flush_loop(flusher, flush_rx, flusher_held))
            .map_err(|e| Error::Thread(format!("cannot start the store's flusher: {e}")))?;
        std::thread::Builder::new()
            .name("store".into())
            .spawn(move || run(store, rx, flush_tx, held))
            .map_err(|e| Error::Thread(format!("cannot start the store thread: {e}")))?;
        Ok(StoreHandle { tx, hold })
    }

    /// Runs `f` on the store thread and returns its answer.
    pub async fn call<R, F>(&self, f: F) -> Result<R, Error>
    where
        F: FnOnce(&Store) -> Result<R, Error> + Send + 'static,
        R: Send + 'static,
    {
        let (reply, answer) = oneshot::channel();
        let job: Job = Box::new(move |store| {
            let _ = reply.send(f(store));
        });
        self.tx.send(Message::Run(job)).map_err(|_| gone())?;
        answer.await.map_err(|_| gone())?
    }

    /// Runs `f` on the store thread and waits for it from a thread that is
    /// not the runtime's (tests, `spawn_blocking`, start-up).
    pub fn call_blocking<R, F>(&self, f: F) -> Result<R, Error>
    where
        F: FnOnce(&Store) -> Result<R, Error> + Send + 'static,
        R: Send + 'static,
    {
        let (reply, answer) = std::sync::mpsc::sync_channel(1);
        let job: Job = Box::new(move |store| {
            let _ = reply.send(f(store));
        });
        self.tx.send(Message::Run(job)).map_err(|_| gone())?;
        answer.recv().map_err(|_| gone())?
    }

    /// Makes everything sent before this call durable (group commit: one
    /// flush serves every request waiting).
    pub async fn flush(&self) -> Result<(), Error> {
        let (reply, answer) = oneshot::channel();
        self.tx.send(Message::Flush(reply)).map_err(|_| gone())?;
        answer.await.map_err(|_| gone())?.map_err(Error::Flush)
    }

    /// Stops the store thread from running anything until the returned
    /// guard is dropped (a test's stalled disk). Takes effect before the
    /// next closure starts.
    pub fn hold(&self) -> Hold {
        *self.hold.held.lock().unwrap_or_else(|p| p.into_inner()) += 1;
        Hold { state: self.hold.clone() }
    }
}

/// Every store thread of the process also waits on this one (tests that run
/// the daemon in-process and have no handle on its store).
fn every_store() -> &'static Arc<HoldState> {
    static EVERY: std::sync::OnceLock<Arc<HoldState>> = std::sync::OnceLock::new();
    EVERY.get_or_init(Arc::default)
}

/// Holds every store thread of this process until the guard is dropped (a
/// test's stalled disk under an in-process daemon).
#[doc(hidden)]
pub fn hold_every_store() -> Hold {
    let state = every_store().clone();
    *state.held.lock().unwrap_or_else(|p| p.into_inner()) += 1;
    Hold { state }
}

fn wait_while_held(hold: &HoldState) {
    let mut held = hold.held.lock().unwrap_or_else(|p| p.into_inner());
    while *held > 0 {
        held = hold.released.wait(held).unwrap_or_else(|p| p.into_inner());
    }
}

fn run(
    store: Store,
    rx: mpsc::Receiver<Message>,
    flushes: mpsc::Sender<oneshot::Sender<Result<(), String>>>,
    hold: Arc<HoldState>,
) {
    while let Ok(message) = rx.recv() {
        wait_while_held(&hold);
        wait_while_held(every_store());
        match message {
            Message::Run(job) => job(&store),
            // Everything sent before this request has run: the flusher's
            // next flush covers it.
            Message::Flush(reply) => {
                if let Err(mpsc::SendError(reply)) = flushes.send(reply) {
                    let _ = reply.send(store.flush_blocking().map_err(|e| e.to_string()));
                }
            }
        }
    }
    // Every handle is gone: what was written is made durable once more.
    if let Err(e) = store.flush_blocking() {
        tracing::warn!(error = %e, "cannot flush the store at the end");
    }
}

/// One flush at a time, for every request waiting when it starts.
fn flush_loop(store: Store, rx: mpsc::Receiver<oneshot::Sender<Result<(), String>>>, hold: Arc<HoldState>) {
    while let Ok(first) = rx.recv() {
        let mut waiting = vec![first];
        waiting.extend(rx.try_iter());
        wait_while_held(&hold);
        wait_while_held(every_store());
        let result = store.flush_blocking().map_err(|e| e.to_string());
        for reply in waiting {
            let _ = reply.send(result.clone());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn calls_run_in_order_on_one_thread_and_a_flush_covers_what_came_before() {
        let dir = tempfile::tempdir().expect("dir");
        let handle = StoreHandle::spawn(Store::open(dir.path()).expect("store")).expect("spawn");
        let here = std::thread::current().id();
        let mut threads = Vec::new();
        for n in 0..50u64 {
            threads.push(
                handle
                    .call(move |s| {
                        s.set_last_resync(&n.to_string())?;
                        Ok(std::thread::current().id())
                    })
                    .await
                    .expect("call"),
            );
        }
        handle.flush().await.expect("flush");
        assert!(threads.iter().all(|t| *t == threads[0] && *t != here), "one thread, not the caller's");
        let last = handle.call(|s| s.last_resync()).await.expect("read");
        assert_eq!(last.as_deref(), Some("49"));
    }

    #[tokio::test]
    async fn a_held_thread_runs_nothing_until_released_and_the_caller_is_not_blocked() {
        let dir = tempfile::tempdir().expect("dir");
        let handle = StoreHandle::spawn(Store::open(dir.path()).expect("store")).expect("spawn");
        let hold = handle.hold();
        let h = handle.clone();
        let call = tokio::spawn(async move { h.call(|s| s.last_resync()).await });
        // The runtime is free while the store is held: a timer fires.
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        assert!(!call.is_finished(), "held: the call waits");
        drop(hold);
        let answer = tokio::time::timeout(std::time::Duration::from_secs(10), call).await;
        assert!(matches!(answer, Ok(Ok(Ok(None)))), "released: the call ran");
    }
}
