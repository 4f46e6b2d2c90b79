//! The executor that plugin calls run on: one current-thread tokio runtime per calling
//! thread, with the timer only. wasmtime's async path needs an executor for fibers and
//! for WASI's sleeps; a current-thread runtime spawns no workers, so a call runs on
//! the thread that made it and leaves nothing running after it returns.
//!
//! vmguest's own code is synchronous. A library caller that is itself inside a tokio
//! runtime cannot block that runtime's thread on another one, so there the call runs on
//! a scoped thread, which is joined before the answer is returned.

use std::future::Future;

use tokio::runtime::{Builder, Runtime};

/// Why a call could not be run at all.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error("cannot start the plugin executor: {0}")]
    Start(String),
    #[error("the plugin executor's thread panicked")]
    Panicked,
}

thread_local! {
    static RUNTIME: Result<Runtime, String> = Builder::new_current_thread()
        .enable_time()
        .build()
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
        Ok(rt) => Ok(rt.block_on(fut)),
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
