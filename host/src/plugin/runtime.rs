//! The executor that plugin calls run on: one current-thread tokio runtime per calling
//! thread, with the timer only. wasmtime's async path needs an executor for fibers and
//! for WASI's sleeps; a current-thread runtime spawns no workers, so a call runs on
//! the thread that made it and leaves nothing running after it returns.
//!
//! WASI's file calls run on the runtime's blocking pool, not on the calling thread, so
//! that the deadline can cancel a call blocked in one (opening a FIFO that nobody
//! writes). Such a helper thread is stuck in the kernel and cannot be stopped; it is
//! left to end on its own and never waited for, so neither the call nor the thread that
//! made it hangs. Idle helpers end after
//! [`BLOCKING_KEEP_ALIVE`].
//!
//! vmguest's own code is synchronous. A library caller that is itself inside a tokio
//! runtime cannot block that runtime's thread on another one, so there the call runs on
//! a scoped thread, which is joined before the answer is returned.

use std::future::Future;

use tokio::runtime::{Builder, Runtime};

use super::limits::{BLOCKING_KEEP_ALIVE, MAX_BLOCKING_THREADS};

/// Why a call could not be run at all.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error("cannot start the plugin executor: {0}")]
    Start(String),
    #[error("the plugin executor's thread panicked")]
    Panicked,
}

/// A runtime that, when its thread ends, does not wait for helper threads stuck in the
/// kernel (tokio's own drop would wait for them forever).
struct Executor(Option<Runtime>);

impl Drop for Executor {
    fn drop(&mut self) {
        if let Some(rt) = self.0.take() {
            rt.shutdown_background();
        }
    }
}

thread_local! {
    static RUNTIME: Result<Executor, String> = Builder::new_current_thread()
        .enable_time()
        .thread_keep_alive(BLOCKING_KEEP_ALIVE)
        .max_blocking_threads(MAX_BLOCKING_THREADS)
        .build()
        .map(|rt| Executor(Some(rt)))
        .map_err(|e| e.to_string());
}

/// Run `fut` to completion on this thread's runtime.
pub fn block_on<F>(fut: F) -> Result<F::Output, RuntimeError>
where
    F: Future + Send,
    F::Output: Send,
{
    if tokio::runtime::Handle::try_current().is_ok() {
        return std::thread::scope(|s| {
            s.spawn(|| on_this_thread(fut))
                .join()
                .map_err(|_| RuntimeError::Panicked)?
        });
    }
    on_this_thread(fut)
}

fn on_this_thread<F: Future>(fut: F) -> Result<F::Output, RuntimeError> {
    RUNTIME.with(|rt| match rt {
        Ok(Executor(Some(rt))) => Ok(rt.block_on(fut)),
        Ok(Executor(None)) => Err(RuntimeError::Start("the runtime has shut down".into())),
        Err(e) => Err(RuntimeError::Start(e.clone())),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};

    #[test]
    fn a_timer_fires_on_this_thread() {
        let t = Instant::now();
        let r = block_on(async {
            tokio::time::timeout(Duration::from_millis(20), std::future::pending::<()>()).await
        })
        .unwrap();
        assert!(r.is_err());
        assert!(t.elapsed() >= Duration::from_millis(20));
    }

    #[test]
    fn inside_another_runtime_the_call_runs_on_a_joined_thread() {
        let outer = Builder::new_current_thread().enable_time().build().unwrap();
        let here = std::thread::current().id();
        let ran_on = outer.block_on(async { block_on(async { std::thread::current().id() }) });
        assert_ne!(ran_on.unwrap(), here);
    }
}
