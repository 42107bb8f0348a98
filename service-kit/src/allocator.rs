//! The binaries' allocator settings. Every SutazAI binary allocates with
//! mimalloc (see `command-service/src/main.rs`); this sets how soon it gives
//! freed memory back to the system.

use std::os::raw::{c_int, c_long};

/// `mi_option_purge_delay`: its place in mimalloc 3's `mi_option_e`
/// (`include/mimalloc.h` of `libmimalloc-sys`, which does not name it).
const MI_OPTION_PURGE_DELAY: c_int = 15;

/// How long freed pages stay mapped before mimalloc returns them, in ms.
/// The vendored mimalloc 3 waits 1,000 ms, so the transient allocations of a
/// busy second stay resident for a second after they are freed, and add up
/// with the next second's. With 10 ms (mimalloc's documented default) the
/// query service's peak RSS in `loadgen --parts commands,queries,visibility`
/// fell from 136.5 / 137.0 to about 123–124 MiB, and no process used
/// measurably more CPU in the visibility step (2026-11-27).
pub const PURGE_DELAY_MS: c_long = 10;

/// Sets [`PURGE_DELAY_MS`], unless `MIMALLOC_PURGE_DELAY` is in the
/// environment (then mimalloc has read it and it stands). Call first thing in
/// `main`, before any other thread starts: mimalloc's options are not
/// synchronised.
pub fn return_freed_memory_promptly() {
    if std::env::var_os("MIMALLOC_PURGE_DELAY").is_some() {
        return;
    }
    // SAFETY: a plain store into mimalloc's option table, made while the
    // process has one thread; the option is valid in the linked mimalloc.
    #[allow(unsafe_code)]
    unsafe {
        libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, PURGE_DELAY_MS);
    }
}

/// A binary's `main`: sets the allocator (before any thread starts), then
/// runs `main` on a multi-threaded runtime (as `#[tokio::main]` would; it
/// honours `TOKIO_WORKER_THREADS`). `name` prefixes the message if the
/// runtime cannot start.
pub fn run_main<F>(name: &str, main: impl FnOnce() -> F) -> std::process::ExitCode
where
    F: std::future::Future<Output = std::process::ExitCode>,
{
    return_freed_memory_promptly();
    match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime.block_on(main()),
        Err(e) => {
            eprintln!("{name}: cannot start the async runtime: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[allow(unsafe_code)]
    fn the_option_set_is_the_purge_delay() {
        // The delay's default in the linked mimalloc is 1,000 ms: the
        // option at this place reads so before it is set (unless the
        // environment set it), and reads the new value after.
        // SAFETY: reads of mimalloc's option table.
        let before = unsafe { libmimalloc_sys::mi_option_get(MI_OPTION_PURGE_DELAY) };
        if std::env::var_os("MIMALLOC_PURGE_DELAY").is_none() {
            assert_eq!(before, 1000);
        }
        return_freed_memory_promptly();
        let after = unsafe { libmimalloc_sys::mi_option_get(MI_OPTION_PURGE_DELAY) };
        if std::env::var_os("MIMALLOC_PURGE_DELAY").is_none() {
            assert_eq!(after, PURGE_DELAY_MS);
        }
    }
}
