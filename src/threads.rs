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
const STACK_BYTES: usize = 64 << 20;

/// Run `f` on a worker of a new rayon thread pool with as many threads as rayon's global pool
/// would have (`RAYON_NUM_THREADS` or the available cores), and return its result. Parallel
/// operations inside `f` then run on that pool. On wasm, and if the pool cannot be built,
/// `f` runs on the calling thread.
pub fn run_on_pool<R: Send>(f: impl FnOnce() -> R + Send) -> R {
    #[cfg(not(target_family = "wasm"))]
    if let Ok(pool) = rayon::ThreadPoolBuilder::new()
        .stack_size(STACK_BYTES)
        .thread_name(|i| format!("remem-{i}"))
        .build()
    {
        return pool.install(f);
    }
    f()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs_on_a_worker_with_the_global_pools_threads() {
        assert!(rayon::current_thread_index().is_none());
        let outside = rayon::current_num_threads();
        let (index, threads) =
            run_on_pool(|| (rayon::current_thread_index(), rayon::current_num_threads()));
        assert!(index.is_some(), "the closure ran outside the pool");
        assert_eq!(threads, outside);
    }
}
