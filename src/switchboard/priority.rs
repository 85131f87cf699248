//! Work that can wait runs below the calls. On a full machine the warning, the
//! bridge and call setup get the cores first; the recording writer and the
//! embedded records service catch up once the load has passed (what they have
//! not done yet waits in their queues and the spool, counted).

/// Lowers the calling thread's priority by `steps` nice steps. On Linux a nice
/// value belongs to one thread, and the threads it starts inherit it.
pub fn lower_this_thread(steps: libc::c_int) -> std::io::Result<()> {
    // SAFETY: gettid, getpriority and setpriority take plain integers; with a
    // thread id, PRIO_PROCESS names that one thread.
    let outcome = unsafe {
        let tid = libc::gettid() as libc::id_t;
        let now = libc::getpriority(libc::PRIO_PROCESS, tid);
        libc::setpriority(libc::PRIO_PROCESS, tid, now + steps)
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
