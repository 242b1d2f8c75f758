//! The `remem` command line.

mod cli;

use clap::Parser;

fn main() -> std::process::ExitCode {
    quiet_vulkan_probe();
    end_quietly_on_closed_output();
    remem::heap::keep_freed_memory();
    let args = cli::Cli::parse();
    match remem::threads::run_on_pool(|| cli::run(args)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {}", remem::error::summarise(&format!("{e:#}"), 600));
            std::process::ExitCode::FAILURE
        }
    }
}

/// Mesa's Vulkan drivers print `error: XDG_RUNTIME_DIR is invalid or not set in the
/// environment` four times when `--device auto` probes them from a session without a runtime
/// folder (a container, ssh, CI), although nothing is wrong. Such a process gets a private one
/// under the temporary folder, so the probe says nothing alarming.
fn quiet_vulkan_probe() {
    #[cfg(unix)]
    {
        use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
        let set = std::env::var_os("XDG_RUNTIME_DIR");
        if set.is_some_and(|d| std::path::Path::new(&d).is_dir()) {
            return;
        }
        let user = std::env::var("USER").unwrap_or_else(|_| "user".into());
        let dir = std::env::temp_dir().join(format!("remem-runtime-{user}"));
        let _ = std::fs::DirBuilder::new().mode(0o700).create(&dir);
        let private = std::fs::metadata(&dir)
            .is_ok_and(|m| m.is_dir() && m.permissions().mode() & 0o777 == 0o700);
        if private {
            // SAFETY: the first thing `main` does, before any other thread of the process
            // exists, so nothing reads the environment concurrently.
            unsafe { std::env::set_var("XDG_RUNTIME_DIR", &dir) };
        }
    }
}

/// `remem stream ... | head`: when the reader closes the pipe, end quietly as command-line
/// tools do (the default action of SIGPIPE), instead of panicking on the failed write. Rust
/// programs start with SIGPIPE ignored.
fn end_quietly_on_closed_output() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: restores the signal's default disposition before any other thread exists; no
    // handler runs Rust code.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}
