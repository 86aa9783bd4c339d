//! The listener's word to its connections that the gateway is shutting down.
//!
//! A connection waiting for its next call must close at once when the gateway
//! stops. Waiting on a `watch` channel's `changed()` in each of those waits
//! puts the connection's task in the channel's list of waiters and takes it
//! out again: two lock round trips and a waker clone per call. Instead the
//! serving task enrols its waker once, for as long as it serves the
//! connection; the listener wakes every enrolled task when it closes, and a
//! woken connection reads the signal, one atomic load.
//!
//! Every connection also holds the channel's receiver, whether it is served,
//! parked or handed to hyper: the listener's drain waits until the last one is
//! dropped.

use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Poll, Waker};

use slab::Slab;
use tokio::sync::watch;

/// The tasks serving connections, woken when the listener closes.
type Enrolled = Arc<Mutex<Slab<Waker>>>;

/// The listener's side.
#[derive(Debug)]
pub(crate) struct Closing {
    /// `true` once closed.
    tx: watch::Sender<bool>,
    tasks: Enrolled,
}

impl Closing {
    pub(crate) fn new() -> Self {
        Self {
            tx: watch::channel(false).0,
            tasks: Enrolled::default(),
        }
    }

    /// A connection's side, unset until [`Closing::close`].
    pub(crate) fn signal(&self) -> Signal {
        let mut rx = self.tx.subscribe();
        // A new receiver has seen the value it starts with.
        if *rx.borrow() {
            rx.mark_changed();
        }
        Signal {
            rx,
            tasks: self.tasks.clone(),
        }
    }

    /// Sets every signal and wakes the enrolled tasks, so that the idle ones
    /// see it now.
    pub(crate) fn close(&self) {
        self.tx.send_replace(true);
        let tasks = self.tasks.lock().unwrap_or_else(PoisonError::into_inner);
        for (_, waker) in tasks.iter() {
            waker.wake_by_ref();
        }
    }

    /// Resolves when every signal has been dropped: the last connection has
    /// ended.
    pub(crate) async fn drained(&self) {
        self.tx.closed().await;
    }
}

/// A connection's side of [`Closing`].
#[derive(Debug)]
pub(crate) struct Signal {
    rx: watch::Receiver<bool>,
    tasks: Enrolled,
}

impl Signal {
    /// True once the gateway is shutting down.
    pub(crate) fn is_set(&self) -> bool {
        // An error: the listener is gone, which is a shutdown too.
        self.rx.has_changed().unwrap_or(true)
    }

    /// Resolves when the gateway shuts down: for waits that are few and long
    /// (parked connections, hyper's), where a wake-up registration per wait
    /// costs nothing that matters.
    pub(crate) async fn changed(&mut self) {
        // `Err`: the listener is gone.
        let _ = self.rx.changed().await;
    }

    /// Enrols the calling task: it is woken when the gateway shuts down,
    /// whatever it waits for, until the returned guard is dropped. A task's
    /// waker stays the same while it lives, so one enrolment lasts it.
    pub(crate) async fn enrol(&self) -> Enrolment {
        let tasks = self.tasks.clone();
        let key = std::future::poll_fn(|cx| {
            let mut enrolled = tasks.lock().unwrap_or_else(PoisonError::into_inner);
            Poll::Ready(enrolled.insert(cx.waker().clone()))
        })
        .await;
        Enrolment { tasks, key }
    }
}

/// A task enrolled to be woken at shutdown; it leaves when dropped.
#[derive(Debug)]
pub(crate) struct Enrolment {
    tasks: Enrolled,
    key: usize,
}

impl Drop for Enrolment {
    fn drop(&mut self) {
        let mut enrolled = self.tasks.lock().unwrap_or_else(PoisonError::into_inner);
        enrolled.try_remove(self.key);
    }
}

#[cfg(test)]
mod tests {
    use std::future::Future;
    use std::pin::pin;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::task::{Context, Wake};

    use futures_util::FutureExt;

    use super::*;

    /// Counts its wake-ups.
    #[derive(Default)]
    struct Counted(AtomicUsize);

    impl Wake for Counted {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn enrol(signal: &Signal, waker: &Waker) -> Enrolment {
        let mut enrolling = pin!(signal.enrol());
        match enrolling.as_mut().poll(&mut Context::from_waker(waker)) {
            Poll::Ready(enrolment) => enrolment,
            Poll::Pending => unreachable!("enrolling never waits"),
        }
    }

    #[test]
    fn close_sets_every_signal_and_wakes_only_enrolled_tasks() {
        let closing = Closing::new();
        let (a, b) = (closing.signal(), closing.signal());
        let (woken_a, woken_b, left) = (
            Arc::new(Counted::default()),
            Arc::new(Counted::default()),
            Arc::new(Counted::default()),
        );
        let _a = enrol(&a, &Waker::from(woken_a.clone()));
        let _b = enrol(&b, &Waker::from(woken_b.clone()));
        drop(enrol(&a, &Waker::from(left.clone())));
        assert!(!a.is_set() && !b.is_set());

        closing.close();
        assert!(a.is_set() && b.is_set());
        assert_eq!(woken_a.0.load(Ordering::Relaxed), 1);
        assert_eq!(woken_b.0.load(Ordering::Relaxed), 1);
        assert_eq!(left.0.load(Ordering::Relaxed), 0, "a task that left");
        // A signal made after the close is set too.
        assert!(closing.signal().is_set());
    }

    #[tokio::test]
    async fn drained_waits_for_the_last_signal() {
        let closing = Closing::new();
        let signal = closing.signal();
        closing.close();
        let mut drained = pin!(closing.drained());
        assert!(drained.as_mut().now_or_never().is_none());
        drop(signal);
        drained.await;
    }

    #[tokio::test]
    async fn changed_resolves_at_close() {
        let closing = Closing::new();
        let mut signal = closing.signal();
        let mut changed = pin!(signal.changed());
        assert!(changed.as_mut().now_or_never().is_none());
        closing.close();
        changed.await;
    }
}
