//! The worker's long-running tasks under one supervisor (as tokio's mini-redis does: a
//! `JoinSet` under one shutdown signal).
//!
//! Each task is started from a factory, so it can be started again. A task that panics is
//! logged with its message and restarted after a backoff (1 s doubling to 60 s): the mailbox
//! reader, the outbox sender and the clock keep no state that a restart could lose (a crash at
//! any line replays safely). A task that returns an error (a configuration the worker cannot
//! serve, a database that refuses the schema) takes the worker down: the others are told to
//! stop, and `run` returns the error, so the process exits non-zero. Nothing ends silently.
//! `/healthz` shows every task's state ([`TaskState`]).
//!
//! The run is over when every essential task (reader, sender) has ended on its own; the
//! others (clock, HTTP, template watcher) are then told to stop.

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Mutex;
use std::time::Duration;

use tokio::sync::watch;

use crate::worker::WorkerError;

/// A task's future.
pub type TaskFuture<T> = Pin<Box<dyn Future<Output = Result<T, WorkerError>> + Send>>;

/// How one task is (re)started: given the stop signal, its future.
pub type TaskFactory<T> = Box<dyn Fn(watch::Receiver<bool>) -> TaskFuture<T> + Send + Sync>;

/// One supervised task.
pub struct Task<T> {
    /// Its name in logs and in `/healthz`.
    pub name: &'static str,
    /// The run is over when every essential task has ended.
    pub essential: bool,
    /// Starts it.
    pub start: TaskFactory<T>,
}

/// Where a task stands, for `/healthz`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TaskState {
    /// Running.
    Running,
    /// It panicked and waits to be started again.
    Restarting,
    /// It ended (its work is done, or the worker stops).
    Done,
    /// It failed and took the worker down.
    Failed,
}

impl TaskState {
    /// The word in `/healthz`.
    pub fn label(self) -> &'static str {
        match self {
            TaskState::Running => "running",
            TaskState::Restarting => "restarting",
            TaskState::Done => "done",
            TaskState::Failed => "failed",
        }
    }
}

/// Every task's state in this process.
pub static TASKS: Mutex<BTreeMap<&'static str, TaskState>> = Mutex::new(BTreeMap::new());

/// Task restarts after a panic, in this process.
pub static RESTARTS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

fn set_state(name: &'static str, state: TaskState) {
    if let Ok(mut t) = TASKS.lock() {
        t.insert(name, state);
    }
}

/// The tasks' states, for `/healthz`: (name, state).
pub fn states() -> Vec<(&'static str, TaskState)> {
    TASKS
        .lock()
        .map(|t| t.iter().map(|(k, v)| (*k, *v)).collect())
        .unwrap_or_default()
}

/// First wait before a restart, and the longest.
const RESTART_MIN: Duration = Duration::from_secs(1);
const RESTART_MAX: Duration = Duration::from_secs(60);

/// Runs `tasks` until every essential one has ended, `shutdown` turns true (the tasks see it
/// and finish what they hold), or one fails. Returns each task's result by name, or the first
/// error.
pub async fn supervise<T: Send + 'static>(
    tasks: Vec<Task<T>>,
    mut shutdown: watch::Receiver<bool>,
) -> Result<Vec<(&'static str, T)>, WorkerError> {
    let (stop_tx, stop_rx) = watch::channel(*shutdown.borrow());
    let mut set: tokio::task::JoinSet<Result<T, WorkerError>> = tokio::task::JoinSet::new();
    let mut running: BTreeMap<tokio::task::Id, usize> = BTreeMap::new();
    let mut backoff: Vec<Duration> = vec![RESTART_MIN; tasks.len()];
    let mut essential_left = tasks.iter().filter(|t| t.essential).count();
    let mut results = Vec::new();
    let mut failure: Option<WorkerError> = None;
    let spawn = |set: &mut tokio::task::JoinSet<Result<T, WorkerError>>,
                 i: usize,
                 delay: Duration,
                 stop: watch::Receiver<bool>| {
        let fut = (tasks[i].start)(stop.clone());
        let name = tasks[i].name;
        let mut stop = stop;
        set.spawn(async move {
            if !delay.is_zero() {
                tokio::select! {
                    _ = tokio::time::sleep(delay) => {}
                    _ = stop.wait_for(|s| *s) => {}
                }
            }
            set_state(name, TaskState::Running);
            fut.await
        })
        .id()
    };
    for (i, t) in tasks.iter().enumerate() {
        set_state(t.name, TaskState::Running);
        running.insert(spawn(&mut set, i, Duration::ZERO, stop_rx.clone()), i);
    }
    let stop = |stop_tx: &watch::Sender<bool>| {
        let _ = stop_tx.send(true);
    };
    loop {
        let joined = tokio::select! {
            j = set.join_next_with_id() => j,
            r = shutdown.changed() => {
                if r.is_err() || *shutdown.borrow() {
                    stop(&stop_tx);
                }
                continue;
            }
        };
        let Some(joined) = joined else { break };
        match joined {
            Ok((id, result)) => {
                let Some(i) = running.remove(&id) else {
                    continue;
                };
                let t = &tasks[i];
                match result {
                    Ok(value) => {
                        set_state(t.name, TaskState::Done);
                        tracing::debug!(task = t.name, "task ended");
                        results.push((t.name, value));
                        if t.essential {
                            essential_left -= 1;
                            if essential_left == 0 {
                                stop(&stop_tx);
                            }
                        }
                    }
                    Err(e) => {
                        set_state(t.name, TaskState::Failed);
                        tracing::error!(task = t.name, error = %e, "task failed; stopping the worker");
                        failure.get_or_insert(e);
                        stop(&stop_tx);
                    }
                }
            }
            Err(e) => {
                let Some(i) = running.remove(&e.id()) else {
                    continue;
                };
                let t = &tasks[i];
                let why = if e.is_panic() {
                    let p = e.into_panic();
                    p.downcast_ref::<&str>()
                        .map(|s| s.to_string())
                        .or_else(|| p.downcast_ref::<String>().cloned())
                        .unwrap_or_else(|| "a panic".into())
                } else {
                    "cancelled".into()
                };
                if *stop_rx.borrow() {
                    set_state(t.name, TaskState::Done);
                    tracing::warn!(task = t.name, error = %why, "task ended abnormally while the worker stops");
                    continue;
                }
                let delay = backoff[i];
                backoff[i] = (delay * 2).min(RESTART_MAX);
                RESTARTS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                set_state(t.name, TaskState::Restarting);
                tracing::error!(task = t.name, error = %why, restart_in_ms = delay.as_millis() as u64, "task panicked; restarting it");
                running.insert(spawn(&mut set, i, delay, stop_rx.clone()), i);
            }
        }
    }
    match failure {
        Some(e) => Err(e),
        None => Ok(results),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    fn task(
        name: &'static str,
        essential: bool,
        f: impl Fn(watch::Receiver<bool>) -> TaskFuture<u32> + Send + Sync + 'static,
    ) -> Task<u32> {
        Task {
            name,
            essential,
            start: Box::new(f),
        }
    }

    /// Waits for the stop signal, then returns `v`.
    fn until_stopped(v: u32) -> impl Fn(watch::Receiver<bool>) -> TaskFuture<u32> {
        move |mut stop| {
            Box::pin(async move {
                let _ = stop.wait_for(|s| *s).await;
                Ok(v)
            })
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_panicking_task_is_restarted_and_the_run_ends_with_the_essential_ones() {
        let starts = Arc::new(AtomicUsize::new(0));
        let s = starts.clone();
        let flaky = task("sender", true, move |_| {
            let n = s.fetch_add(1, Ordering::SeqCst);
            Box::pin(async move {
                if n < 2 {
                    panic!("boom {n}");
                }
                Ok(7)
            })
        });
        let (_tx, rx) = watch::channel(false);
        let out = supervise(vec![flaky, task("clock", false, until_stopped(1))], rx)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            starts.load(Ordering::SeqCst),
            3,
            "started twice more after two panics"
        );
        let mut out = out;
        out.sort();
        // The clock is told to stop once the only essential task is done.
        assert_eq!(out, vec![("clock", 1), ("sender", 7)]);
        assert!(RESTARTS.load(Ordering::Relaxed) >= 2);
    }

    #[tokio::test(start_paused = true)]
    async fn a_failing_task_stops_the_others_and_the_run_returns_its_error() {
        let failing = task("mailbox", true, |_| {
            Box::pin(async { Err(WorkerError::Unsupported("bad login".into())) })
        });
        let (_tx, rx) = watch::channel(false);
        let r = supervise(
            vec![
                failing,
                task("sender", true, until_stopped(2)),
                task("http", false, until_stopped(3)),
            ],
            rx,
        )
        .await;
        assert!(
            matches!(r, Err(WorkerError::Unsupported(ref m)) if m == "bad login"),
            "{r:?}"
        );
        assert!(states().contains(&("mailbox", TaskState::Failed)));
    }

    #[tokio::test(start_paused = true)]
    async fn shutdown_stops_every_task_and_keeps_their_results() {
        let (tx, rx) = watch::channel(false);
        let run = tokio::spawn(supervise(
            vec![
                task("mailbox", true, until_stopped(1)),
                task("sender", true, until_stopped(2)),
            ],
            rx,
        ));
        let _ = tx.send(true);
        let mut out = run
            .await
            .unwrap_or_else(|e| panic!("{e}"))
            .unwrap_or_else(|e| panic!("{e}"));
        out.sort();
        assert_eq!(out, vec![("mailbox", 1), ("sender", 2)]);
    }
}
