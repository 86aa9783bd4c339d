//! The usage path's background threads — the spool thread, the shipper's
//! segment reads, the embedded store's SQLite workers and its rollup fold —
//! run at a lower CPU priority than the threads that serve calls:
//! [`BACKGROUND_NICE`] more nice than the process's main thread (10 under a
//! process started at 0, at most 19), whichever thread lowers them.
//!
//! They still get the CPU whenever it has room, and a share of it when it has
//! none (at nice 10 against 0, about a tenth: far more than the usage path
//! needs). What changes is who waits when both want the CPU at once: a
//! serving thread that wakes up for a call takes the CPU at once, instead of
//! waiting for the background thread's time slice to end. At the same
//! priority, the shipper's read of each second's segment (about 5 ms) and
//! the store's inserts and checkpoints (1 to 4.5 ms) held the serving thread
//! up once a second or more (docs/PERFORMANCE.md, "A faster box; the
//! recorder, the rate limiter, background priorities").
//!
//! Raising a thread's nice value needs no privilege. Where it cannot be set
//! (not Linux, or refused), the thread runs at the normal priority and a
//! debug line says so.

/// How much nicer than the serving threads the usage path's background
/// threads run.
pub const BACKGROUND_NICE: i32 = 10;

/// Lowers the calling thread's priority to [`BACKGROUND_NICE`] below the
/// main thread's.
pub fn lower_this_thread() {
    #[cfg(target_os = "linux")]
    if let Some(base) = base() {
        lower(rustix::thread::gettid(), base);
    }
}

/// The main thread's nice value: the serving threads' (they start at it),
/// where a background thread that lowers another would give its own.
#[cfg(target_os = "linux")]
fn base() -> Option<i32> {
    rustix::process::getpriority_process(Some(rustix::process::getpid())).ok()
}

/// Runs `work` on a new thread named `name`, at the background priority,
/// and waits for its result without holding up the runtime. (A thread of
/// tokio's blocking pool cannot be lowered for one task: a thread may make
/// its priority lower, not higher again, and the pool reuses its threads.)
/// Fails if the thread cannot be started or `work` panics.
pub async fn run_in_background<T: Send + 'static>(
    name: &str,
    work: impl FnOnce() -> T + Send + 'static,
) -> std::io::Result<T> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name(name.to_owned())
        .spawn(move || {
            lower_this_thread();
            let _ = tx.send(work());
        })?;
    rx.await
        .map_err(|_| std::io::Error::other(format!("the {name} thread ended without an answer")))
}

/// Lowers the priority of every thread of this process whose name starts
/// with `prefix` (threads a library starts, such as sqlx's SQLite workers,
/// named through its options) to [`BACKGROUND_NICE`] below the main
/// thread's. Threads already that low are left as they are, so it can run
/// again as the library starts more.
pub fn lower_threads_named(prefix: &str) {
    #[cfg(target_os = "linux")]
    {
        let Some(base) = base() else {
            return;
        };
        let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
            tracing::debug!(
                "cannot list this process's threads; background threads keep their priority"
            );
            return;
        };
        for task in tasks.flatten() {
            let Some(tid) = task
                .file_name()
                .to_str()
                .and_then(|s| s.parse().ok())
                .and_then(rustix::process::Pid::from_raw)
            else {
                continue;
            };
            let named = std::fs::read_to_string(task.path().join("comm"))
                .is_ok_and(|comm| comm.starts_with(prefix));
            if named {
                lower(tid, base);
            }
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = prefix;
}

/// Sets thread `tid`'s nice value to [`BACKGROUND_NICE`] above `base`
/// unless it is that high already. On Linux the nice value is per thread:
/// the id is the thread's.
#[cfg(target_os = "linux")]
fn lower(tid: rustix::process::Pid, base: i32) {
    let target = (base + BACKGROUND_NICE).min(19);
    if rustix::process::getpriority_process(Some(tid)).is_ok_and(|now| now >= target) {
        return;
    }
    if let Err(e) = rustix::process::setpriority_process(Some(tid), target) {
        tracing::debug!(
            error = %e,
            tid = tid.as_raw_nonzero().get(),
            "cannot lower a background thread's priority"
        );
    }
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;

    /// The thread's nice value, as the kernel reports it (`/proc`, field 19).
    fn nice_of(tid: i32) -> i32 {
        let stat = std::fs::read_to_string(format!("/proc/self/task/{tid}/stat")).unwrap();
        // The name (field 2) is in parentheses and may hold spaces.
        let after_name = &stat[stat.rfind(')').unwrap() + 2..];
        after_name.split(' ').nth(16).unwrap().parse().unwrap()
    }

    /// The calling thread's id.
    fn tid() -> i32 {
        rustix::thread::gettid().as_raw_nonzero().get()
    }

    /// A thread named `name` that waits until dropped.
    struct Waiting {
        tid: i32,
        done: Option<std::sync::mpsc::Sender<()>>,
        thread: Option<std::thread::JoinHandle<()>>,
    }

    impl Waiting {
        fn named(name: &str) -> Self {
            let (tx, rx) = std::sync::mpsc::channel();
            let (done, wait) = std::sync::mpsc::channel::<()>();
            let thread = std::thread::Builder::new()
                .name(name.into())
                .spawn(move || {
                    tx.send(tid()).unwrap();
                    // Ends when the sender is dropped.
                    let _ = wait.recv();
                })
                .unwrap();
            Self {
                tid: rx.recv().unwrap(),
                done: Some(done),
                thread: Some(thread),
            }
        }
    }

    impl Drop for Waiting {
        fn drop(&mut self) {
            drop(self.done.take());
            if let Some(t) = self.thread.take() {
                t.join().unwrap();
            }
        }
    }

    #[test]
    fn threads_are_lowered_by_name_and_others_are_left_alone() {
        let named = Waiting::named("prio-test-bg");
        let me = tid();
        let mine_before = nice_of(me);
        let main = rustix::process::getpid().as_raw_nonzero().get();
        assert_eq!(
            nice_of(main),
            mine_before,
            "the test runs at the main thread's"
        );
        assert_eq!(
            nice_of(named.tid),
            mine_before,
            "a new thread starts at its parent's"
        );

        let lowered = (mine_before + BACKGROUND_NICE).min(19);
        lower_threads_named("prio-test-");
        assert_eq!(nice_of(named.tid), lowered);
        assert_eq!(
            nice_of(me),
            mine_before,
            "a thread of another name is left alone"
        );
        lower_threads_named("prio-test-");
        assert_eq!(nice_of(named.tid), lowered, "lowered once, not again");
        drop(named);

        // A lowered thread that lowers another (the fold, opening a store
        // connection) lowers it as far as itself, not further.
        let from_lowered = std::thread::spawn(|| {
            lower_this_thread();
            let other = Waiting::named("prio-test-2");
            lower_threads_named("prio-test-2");
            (nice_of(tid()), nice_of(other.tid))
        });
        assert_eq!(from_lowered.join().unwrap(), (lowered, lowered));
        assert_eq!(nice_of(me), mine_before, "only the calling thread");
    }
}
