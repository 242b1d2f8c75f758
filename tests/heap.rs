//! The process's heap (`remem::heap`): freed memory kept for reuse without page faults, by
//! every thread, and handed back on request.
//!
//! A test without the test harness: `keep_freed_memory` must run before any other thread
//! exists (as in `remem`'s `main`), and the allocator settings are process-wide.

#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn main() {
    const MIB: usize = 1 << 20;
    remem::heap::keep_freed_memory();
    let rss = || remem::train::rss_bytes().expect("VmRSS in /proc/self/status") as usize;
    let minor_faults = || {
        // SAFETY: `getrusage` writes one `rusage` into the zeroed value it is given.
        let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
        assert_eq!(unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) }, 0);
        usage.ru_minflt
    };
    // 192 blocks of 1 MiB (below the mmap threshold), every page written, then all freed: what
    // a training step does with its activations. Each time on a new thread, as remem's work
    // runs on the thread pool's workers.
    let step = || {
        std::thread::scope(|s| {
            s.spawn(|| {
                let blocks: Vec<Vec<u8>> = (0..192).map(|i| vec![i as u8 + 1; MIB]).collect();
                std::hint::black_box(&blocks);
            });
        })
    };
    let before = rss();
    step();
    let kept = rss();
    assert!(
        kept >= before + 150 * MIB,
        "freed memory left the process: {before} -> {kept} bytes resident"
    );
    let faults = minor_faults();
    step();
    let again = minor_faults() - faults;
    // Writing 192 MiB of fresh pages takes about 49,000 faults; reused memory takes none.
    assert!(again < 5_000, "the second step took {again} page faults");
    remem::heap::release_freed_memory();
    let released = rss();
    assert!(
        released + 150 * MIB <= kept,
        "freed memory was not handed back: {kept} -> {released} bytes resident"
    );
    println!(
        "heap: kept {} MiB, {again} faults on reuse, released to {} MiB: ok",
        kept / MIB,
        released / MIB
    );
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn main() {
    println!("heap: only glibc's allocator is tuned; nothing to test here");
}
