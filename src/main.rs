use std::cell::Cell;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// mimalloc returns the memory of a burst of calls (SIP transactions kept
/// 32 s, per-call buffers) to the system once it is over, where glibc's malloc
/// kept it (BENCHMARKS.md, "Memory at high call rates").
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    no_transparent_huge_pages();
    courtline::cli::main(collect_freed_memory)
}

/// How often, at most, an idle worker hands memory back.
const COLLECT_EVERY: Duration = Duration::from_secs(1);
/// How often, at most, glibc's malloc (used by the bundled SQLite of the
/// embedded records service) is asked to hand back its free pages.
const TRIM_EVERY: Duration = Duration::from_secs(10);
/// When glibc's malloc was last trimmed, process-wide.
static LAST_TRIM: Mutex<Option<Instant>> = Mutex::new(None);

/// Hands back to the system what other threads freed of this thread's
/// memory. mimalloc takes a block freed by another thread back into its
/// owner's pages only when the owner allocates again, so once a burst of
/// calls was over, idle workers kept the pages of the calls' state (freed by
/// whichever thread ended each call) and RSS stayed near its peak (#16).
/// Called when a worker parks, at most every [`COLLECT_EVERY`] per thread.
fn collect_freed_memory() {
    thread_local! {
        static LAST: Cell<Option<Instant>> = const { Cell::new(None) };
    }
    let now = Instant::now();
    let due = LAST.with(|last| {
        let due = last
            .get()
            .is_none_or(|at| now.duration_since(at) >= COLLECT_EVERY);
        if due {
            last.set(Some(now));
        }
        due
    });
    if due {
        // SAFETY: mi_collect takes no pointer and only works on the calling thread's heap.
        unsafe { libmimalloc_sys::mi_collect(false) };
        trim_system_malloc(now);
    }
}

/// SQLite allocates through glibc's malloc, whose per-thread arenas keep the
/// pages a burst of records freed (14–18 MiB a minute after 18,000 calls at
/// 600/s); `malloc_trim` gives the free ones back (#16). At most every
/// [`TRIM_EVERY`] for the whole process, since it walks every arena.
fn trim_system_malloc(now: Instant) {
    let Ok(mut last) = LAST_TRIM.try_lock() else {
        return;
    };
    if last.is_some_and(|at| now.duration_since(at) < TRIM_EVERY) {
        return;
    }
    *last = Some(now);
    // SAFETY: malloc_trim takes a plain integer and only touches malloc's own free lists.
    unsafe { libc::malloc_trim(0) };
}

/// mimalloc asks for transparent huge pages on the memory it maps
/// (`MADV_HUGEPAGE`); every 2 MiB page it touches then stays resident whole,
/// which more than doubled peak RSS under load. With THP off for this process,
/// RSS is the 4 KiB pages in use.
fn no_transparent_huge_pages() {
    // SAFETY: PR_SET_THP_DISABLE takes plain integers and touches no memory of ours.
    let refused = unsafe { libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0) } != 0;
    if refused {
        // Kernels before 3.15 lack it; memory use is then higher, nothing else.
        eprintln!(
            "courtline: could not turn transparent huge pages off (prctl); RSS may run higher"
        );
    }
}
