use std::cell::Cell;
use std::ffi::c_char;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// jemalloc, with the settings below, hands the memory of a burst of calls
/// back to the system within seconds of its end, peaks lower than mimalloc
/// (the allocator before) and costs no more CPU at 1,500 calls/s
/// (BENCHMARKS.md, "jemalloc instead of mimalloc").
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// jemalloc's settings, read once at its first allocation: a background
/// thread purges pages freed over a second ago (`dirty_decay_ms`) straight
/// back to the system (`muzzy_decay_ms:0`), so no worker has to and nothing
/// waits for a later allocation. With jemalloc's defaults (10 s, purged only
/// by allocating threads) RSS a minute after a burst stayed 20–50 % higher.
/// `_RJEM_MALLOC_CONF` in the environment overrides them.
#[unsafe(export_name = "_rjem_malloc_conf")]
static JEMALLOC_CONF: Option<&c_char> = Some({
    const CONF: &std::ffi::CStr = c"background_thread:true,dirty_decay_ms:1000,muzzy_decay_ms:0";
    // SAFETY: the first byte of a string constant, which lives for the whole program.
    unsafe { &*CONF.as_ptr() }
});

fn main() -> std::process::ExitCode {
    no_transparent_huge_pages();
    courtline::cli::main(hand_back_freed_memory)
}

/// How often, at most, an idle worker empties its jemalloc thread cache.
const FLUSH_EVERY: Duration = Duration::from_secs(1);
/// How often, at most, glibc's malloc (used by the bundled SQLite of the
/// embedded records service) is asked to hand back its free pages.
const TRIM_EVERY: Duration = Duration::from_secs(10);
/// When glibc's malloc was last trimmed, process-wide.
static LAST_TRIM: Mutex<Option<Instant>> = Mutex::new(None);

/// Run each time a runtime worker runs out of work. jemalloc keeps blocks a
/// thread freed in that thread's cache for its next allocations and empties
/// it only as the thread goes on allocating, so after a burst of calls quiet
/// threads' caches kept pages resident (a minute after 600 calls/s: 1.42–1.53
/// × idle, 1.28 × with no caches at all). A worker that parks empties its
/// cache, at most every [`FLUSH_EVERY`] (1.34 ×).
fn hand_back_freed_memory() {
    thread_local! {
        static LAST_FLUSH: Cell<Option<Instant>> = const { Cell::new(None) };
    }
    let now = Instant::now();
    let due = LAST_FLUSH.with(|last| {
        let due = last
            .get()
            .is_none_or(|at| now.duration_since(at) >= FLUSH_EVERY);
        if due {
            last.set(Some(now));
        }
        due
    });
    if due {
        // SAFETY: "thread.tcache.flush" takes and returns no value (null
        // pointers, zero length) and works on the calling thread's cache.
        unsafe {
            tikv_jemalloc_sys::mallctl(
                c"thread.tcache.flush".as_ptr(),
                std::ptr::null_mut(),
                std::ptr::null_mut(),
                std::ptr::null_mut(),
                0,
            );
        }
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

/// Where the kernel backs memory with transparent huge pages (THP mode
/// `always`, or an allocator that asks: mimalloc did, and peak RSS more than
/// doubled), a 2 MiB page stays resident whole while any of it is in use, so
/// the pages the allocator hands back after a burst would not leave. With THP
/// off for this process, RSS is the 4 KiB pages in use.
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
