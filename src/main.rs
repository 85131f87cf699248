/// mimalloc returns the memory of a burst of calls (SIP transactions kept
/// 32 s, per-call buffers) to the system once it is over, where glibc's malloc
/// kept it (BENCHMARKS.md, "Memory at high call rates").
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    no_transparent_huge_pages();
    courtline::cli::main()
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
