//! Running a program's CPU work on rayon's threads rather than beside them.
//!
//! remem's CPU kernels and the gemm crate split work with rayon. Called from a thread outside
//! the pool (a program's main thread), every parallel operation is handed to the pool's
//! workers, which are woken for it, while the caller blocks until a worker wakes it again:
//! two thread wake-ups per operation, hundreds of operations per training step. Called from a
//! worker, the same operation starts on that worker at once and the other workers steal
//! parts of it if they are free. [`run_on_pool`] runs a whole command on a worker.

/// Stack of each pool thread: a program's main thread usually has 8 MiB; the pool's work
/// (deep autodiff graphs dropped recursively) gets as much room. Only touched pages cost memory.
#[cfg(not(target_family = "wasm"))]
const STACK_BYTES: usize = 64 << 20;

/// remem's pool, once a program has asked for it.
#[cfg(not(target_family = "wasm"))]
static POOL: std::sync::OnceLock<Option<rayon::ThreadPool>> = std::sync::OnceLock::new();

/// Run `f` on a worker of remem's thread pool and return its result; parallel operations
/// inside `f` then run on that pool. The pool is built on the first call, once per process,
/// with as many threads as rayon's global pool would have (`RAYON_NUM_THREADS` or the available
/// cores), so a program may call this around each piece of work (each `feed` of a streaming
/// session, say) or once around all of it (as the command line does). Called from a worker of
/// any rayon pool, `f` runs right there. On wasm, and if the pool cannot be built, `f` runs on
/// the calling thread.
///
/// The library never builds the pool itself: this call is the program's choice.
pub fn run_on_pool<R: Send>(f: impl FnOnce() -> R + Send) -> R {
    #[cfg(not(target_family = "wasm"))]
    {
        if rayon::current_thread_index().is_some() {
            return f();
        }
        let pool = POOL.get_or_init(|| {
            rayon::ThreadPoolBuilder::new()
                .stack_size(STACK_BYTES)
                .thread_name(|i| format!("remem-{i}"))
                .build()
                .ok()
        });
        if let Some(pool) = pool {
            return pool.install(f);
        }
    }
    f()
}

/// Run `f` on remem's pool if the program has built it (by calling [`run_on_pool`]), else on
/// the calling thread. The library's own entry points (a streaming session's steps) go through
/// this, so a program that chose the pool gets it everywhere and one that did not gets no
/// threads it did not ask for.
pub fn on_pool_if_started<R: Send>(f: impl FnOnce() -> R + Send) -> R {
    #[cfg(not(target_family = "wasm"))]
    if rayon::current_thread_index().is_none()
        && let Some(Some(pool)) = POOL.get()
    {
        return pool.install(f);
    }
    f()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_library_runs_on_the_pool_only_once_the_program_built_it() {
        // Tests in this module share one process: the pool may already exist. Either way, a
        // call from outside any pool runs where the pool's existence says.
        let started = POOL.get().is_some_and(Option::is_some);
        let index = on_pool_if_started(rayon::current_thread_index);
        assert_eq!(index.is_some(), started);
        run_on_pool(|| ());
        assert!(on_pool_if_started(rayon::current_thread_index).is_some());
    }

    #[test]
    fn runs_on_a_worker_with_the_global_pools_threads() {
        assert!(rayon::current_thread_index().is_none());
        let outside = rayon::current_num_threads();
        let (index, threads) =
            run_on_pool(|| (rayon::current_thread_index(), rayon::current_num_threads()));
        assert!(index.is_some(), "the closure ran outside the pool");
        assert_eq!(threads, outside);
    }

    #[test]
    fn one_pool_serves_every_call_and_nested_calls_stay_put() {
        let name = || std::thread::current().name().map(String::from);
        let first = run_on_pool(name).expect("a named worker");
        assert!(first.starts_with("remem-"), "ran on {first}");
        let threads: std::collections::HashSet<_> = (0..64)
            .map(|_| run_on_pool(|| std::thread::current().id()))
            .collect();
        assert!(
            threads.len() <= rayon::current_num_threads(),
            "a new pool per call"
        );
        let (outer, inner) = run_on_pool(|| {
            let outer = std::thread::current().id();
            (outer, run_on_pool(|| std::thread::current().id()))
        });
        assert_eq!(outer, inner, "a nested call moved threads");
    }
}
