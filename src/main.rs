/// mimalloc returns the memory of a burst of calls (SIP transactions kept
/// 32 s, per-call buffers) to the system once it is over, and peaks lower than
/// glibc's malloc, which kept it (BENCHMARKS.md, "Memory at high call rates").
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    courtline::cli::main()
}
