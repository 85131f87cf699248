//! Work that can wait runs below the calls. On a full machine the warning, the
//! bridge and call setup get the cores first; the recording writer and the
//! embedded records service catch up once the load has passed (what they have
//! not done yet waits in their queues and the spool, counted). Where asked
//! (`[media] realtime`), the media engine runs above everything else.

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

/// Real-time priority (`SCHED_RR`, 1–99) of the media engine's threads with
/// `[media] realtime = true`: low in the range, as Asterisk's `-p` asks, so
/// that the kernel's own real-time threads still come first.
pub const MEDIA_REALTIME_PRIORITY: libc::c_int = 10;

/// Whether `media_threads` real-time threads leave signalling a core of the
/// `cores` this process may use: a saturated real-time thread keeps its core
/// (the kernel leaves others 5 % of it), so with as many media threads as
/// cores a burst of RTP could starve SIP, the records and the admin endpoint.
fn realtime_leaves_a_core(media_threads: usize, cores: usize) -> bool {
    media_threads < cores
}

/// Why `[media] realtime = true` does not apply to `media_threads` threads on
/// `cores` cores (for the log and `courtline check`); `None` when it does.
pub fn realtime_ignored(media_threads: usize, cores: usize) -> Option<String> {
    (!realtime_leaves_a_core(media_threads, cores)).then(|| {
        format!(
            "[media] realtime = true is ignored: {media_threads} real-time media thread(s) on {cores} core(s) would leave none to SIP and the records; they run at normal priority (use fewer [media] threads than cores)"
        )
    })
}

/// Puts the calling thread (a media engine thread) under `SCHED_RR` at
/// [`MEDIA_REALTIME_PRIORITY`]: each 1 ms tick it runs as soon as it wakes,
/// ahead of every normal thread of the machine, instead of queueing behind
/// them. Threads it starts go back to normal scheduling
/// (`SCHED_RESET_ON_FORK`). Fails with `EPERM` unless the process may
/// (root, `CAP_SYS_NICE`, or `RLIMIT_RTPRIO` of at least the priority:
/// systemd's `LimitRTPRIO=`).
pub fn run_media_realtime() -> std::io::Result<()> {
    let param = libc::sched_param {
        sched_priority: MEDIA_REALTIME_PRIORITY,
    };
    // SAFETY: sched_setscheduler reads the one sched_param it is given; pid 0
    // names the calling thread.
    let outcome =
        unsafe { libc::sched_setscheduler(0, libc::SCHED_RR | libc::SCHED_RESET_ON_FORK, &param) };
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
    // Field 19 of /proc/<pid>/task/<tid>/stat.
    stat_field_of_threads(pid, prefix, 19)
}

/// Scheduling policy of each such thread (`libc::SCHED_OTHER`, `SCHED_RR`, …).
#[doc(hidden)]
pub fn policy_of_threads(pid: &str, prefix: &str) -> Vec<i32> {
    // Field 41 of /proc/<pid>/task/<tid>/stat.
    stat_field_of_threads(pid, prefix, 41)
}

/// Field `field` (numbered from 1, as in proc(5)) of the stat file of each
/// thread of `pid` whose name starts with `prefix`.
fn stat_field_of_threads(pid: &str, prefix: &str, field: usize) -> Vec<i32> {
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
        // (state); the command itself may hold spaces and parentheses.
        let after = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
        if let Some(value) = after
            .split_whitespace()
            .nth(field - 3)
            .and_then(|n| n.parse().ok())
        {
            found.push(value);
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

    #[test]
    fn real_time_media_threads_leave_signalling_a_core() {
        assert!(realtime_leaves_a_core(1, 2));
        assert!(realtime_leaves_a_core(3, 4));
        assert!(!realtime_leaves_a_core(1, 1));
        assert!(!realtime_leaves_a_core(2, 2));
        assert!(!realtime_leaves_a_core(8, 4));
        assert_eq!(realtime_ignored(1, 2), None);
        let why = realtime_ignored(2, 2).unwrap();
        assert!(
            why.contains("2 real-time media thread(s) on 2 core(s)"),
            "{why}"
        );
    }

    /// A media thread is real-time where the process may be (root here in CI),
    /// and a thread it starts is back to normal scheduling; where it may not,
    /// the refusal is EPERM and the thread is unchanged.
    #[test]
    fn a_real_time_media_thread_starts_normal_threads() {
        let seen = std::thread::spawn(|| {
            let outcome = run_media_realtime().map_err(|e| e.raw_os_error());
            let own = own_policy();
            let child = std::thread::spawn(own_policy).join().unwrap();
            (outcome, own, child)
        })
        .join()
        .unwrap();
        match seen {
            (Ok(()), own, child) => {
                assert_eq!(own, libc::SCHED_RR | libc::SCHED_RESET_ON_FORK);
                assert_eq!(child, libc::SCHED_OTHER);
            }
            (Err(code), own, child) => {
                assert_eq!(code, Some(libc::EPERM));
                assert_eq!((own, child), (libc::SCHED_OTHER, libc::SCHED_OTHER));
            }
        }
    }

    /// The calling thread's scheduling policy, with the reset-on-fork flag.
    fn own_policy() -> i32 {
        // SAFETY: sched_getscheduler takes a plain integer; 0 names the calling thread.
        unsafe { libc::sched_getscheduler(0) }
    }
}
