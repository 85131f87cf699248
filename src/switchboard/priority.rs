//! Work that can wait runs below the calls. On a full machine the warning, the
//! bridge and call setup get the cores first; the recording writer and the
//! embedded records service catch up once the load has passed (what they have
//! not done yet waits in their queues and the spool, counted).

/// How many nice steps below the switchboard's threads the work that can wait
/// runs. At 600 recorded calls/s on two cores, with the recording threads at
/// the calls' priority, most callers hung up before an operator answered; at
/// 600 calls/s with compliance exports running, INVITE → 200 OK took up to
/// 552 ms with the records service on the switchboard's threads and at most
/// 124 ms with it 10 steps below (#16, BENCHMARKS.md).
pub const BELOW_CALLS: libc::c_int = 10;

/// Puts the calling thread [`BELOW_CALLS`] nice steps below the process's main
/// thread (on Linux a nice value belongs to one thread). Counted from the main
/// thread's value, not this thread's own: a thread inherits its creator's
/// value, so one started by a lowered thread would otherwise go lower still.
pub fn run_below_calls() -> std::io::Result<()> {
    // SAFETY: getpid, gettid, getpriority and setpriority take plain integers;
    // with a thread id, PRIO_PROCESS names that one thread (the process id is
    // the main thread's).
    let outcome = unsafe {
        let main = libc::getpriority(libc::PRIO_PROCESS, libc::getpid() as libc::id_t);
        libc::setpriority(
            libc::PRIO_PROCESS,
            libc::gettid() as libc::id_t,
            main + BELOW_CALLS,
        )
    };
    if outcome == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// Nice value of each thread of process `pid` (`"self"` for this one) whose
/// name starts with `prefix` (the kernel keeps 15 bytes of a name), from /proc.
#[doc(hidden)]
pub fn nice_of_threads(pid: &str, prefix: &str) -> Vec<i32> {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return Vec::new();
    };
    let mut found = Vec::new();
    for task in tasks.flatten() {
        let task = task.path();
        let comm = std::fs::read_to_string(task.join("comm")).unwrap_or_default();
        if !comm.starts_with(prefix) {
            continue;
        }
        let stat = std::fs::read_to_string(task.join("stat")).unwrap_or_default();
        // Fields after the command's closing parenthesis start at field 3
        // (state); nice is field 19.
        let after = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
        if let Some(nice) = after
            .split_whitespace()
            .nth(16)
            .and_then(|n| n.parse().ok())
        {
            found.push(nice);
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The calling thread's nice value.
    fn own_nice() -> i32 {
        // SAFETY: getpriority takes plain integers; 0 names the calling thread.
        unsafe { libc::getpriority(libc::PRIO_PROCESS, 0) }
    }

    #[test]
    fn a_thread_started_by_a_lowered_one_ends_up_as_low_not_lower() {
        // SAFETY: as in run_below_calls.
        let main = unsafe { libc::getpriority(libc::PRIO_PROCESS, libc::getpid() as libc::id_t) };
        let below = (main + BELOW_CALLS).min(19);
        let seen = std::thread::spawn(|| {
            run_below_calls().unwrap();
            let lowered = own_nice();
            let child = std::thread::spawn(|| {
                let inherited = own_nice();
                run_below_calls().unwrap();
                (inherited, own_nice())
            });
            (lowered, child.join().unwrap())
        })
        .join()
        .unwrap();
        assert_eq!(seen, (below, (below, below)));
    }
}
