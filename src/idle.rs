//! What a long-lived thread does when it runs out of work: hand the memory
//! it no longer uses back to the system (the binary's allocator hook).
//!
//! mimalloc takes a block that one thread frees from another thread's pages
//! back only when the owning thread allocates or collects again; a thread
//! that went quiet after a burst of calls kept those pages resident (#16).
//! The binary registers what to do ([`set_thread_idle`]); the tokio workers
//! (when they park), the media engine's shards and the recording writer call
//! [`thread_idle`] when they have nothing to do. Without a registered hook
//! (tests, other allocators) it does nothing.

use std::sync::OnceLock;

/// The registered hook: rate-limits itself per thread and collects.
static HOOK: OnceLock<fn()> = OnceLock::new();

/// Registers `hook` to run on [`thread_idle`]; the first registration wins.
pub fn set_thread_idle(hook: fn()) {
    let _ = HOOK.set(hook);
}

/// Called by a long-lived thread that has nothing to do right now; cheap
/// enough to call every time (the hook decides whether it is due).
pub fn thread_idle() {
    if let Some(hook) = HOOK.get() {
        hook();
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    static CALLS: AtomicUsize = AtomicUsize::new(0);

    fn count() {
        CALLS.fetch_add(1, Ordering::Relaxed);
    }

    #[test]
    fn the_registered_hook_runs_on_each_idle_call() {
        set_thread_idle(count);
        let before = CALLS.load(Ordering::Relaxed);
        thread_idle();
        thread_idle();
        assert_eq!(CALLS.load(Ordering::Relaxed), before + 2);
    }
}
