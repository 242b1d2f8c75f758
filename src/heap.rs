//! How the process's heap hands freed memory back to the system.
//!
//! A training step on the CPU allocates and frees hundreds of megabytes of activations and
//! gradients, and a streaming step a few megabytes per layer. glibc's allocator returns large
//! freed blocks to the system (`munmap`, or trimming the top of the heap), so the next step
//! takes a page fault on every 4 KiB it touches again: about 58,000 faults per `medium` training
//! step on the machines remem is measured on (0.2 s of kernel time a step, about 3% of its CPU
//! time); with this, none after the first step.
//! [`keep_freed_memory`] keeps them in the process instead. Programs that embed remem choose
//! their own allocator; this is what the `remem` command line and `cargo bench` do.

/// Keep freed memory in the process for reuse: blocks up to 32 MiB come from the heap rather
/// than fresh mappings, the heap is not trimmed, and every thread allocates from that one heap
/// (glibc gives other threads heaps of their own, at most 64 MiB each, and unmaps each one
/// that empties whatever the trim threshold; remem's work runs on the thread pool's workers).
/// The resident size then stays at its peak instead of following each step's rise and fall.
/// Only glibc (Linux) is tuned; elsewhere this does nothing.
pub fn keep_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: `mallopt` only sets allocator parameters; it is called before any other thread
    // exists and with values glibc documents as valid (32 MiB is its maximum mmap threshold).
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 32 << 20);
        libc::mallopt(libc::M_TRIM_THRESHOLD, i32::MAX);
        libc::mallopt(libc::M_ARENA_MAX, 1);
    }
}

/// Hand the memory freed so far back to the system now (glibc's `malloc_trim`, every arena),
/// so that the resident size falls to what is in use. [`keep_freed_memory`] keeps freed blocks
/// for speed; a program that measures the memory of one part after another (as `remem bench`
/// does for each stream) calls this between the parts. Only glibc (Linux) releases anything;
/// elsewhere this does nothing.
pub fn release_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: `malloc_trim` only returns free memory to the system; any pad value is valid.
    unsafe {
        libc::malloc_trim(0);
    }
}
