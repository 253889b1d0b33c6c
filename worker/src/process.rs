//! Signals to processes and process groups (the docker-machine calls run each in a
//! group of its own, so that their children can be found and stopped with them).

/// SIGKILL to every process of group `pgid`.
#[allow(unsafe_code)]
pub fn kill_group(pgid: u32) {
    let Ok(pgid) = libc::pid_t::try_from(pgid) else {
        return;
    };
    if pgid <= 1 {
        return;
    }
    // SAFETY: killpg takes two integers and only sends a signal; it reads or writes no
    // memory of this process.
    unsafe {
        libc::killpg(pgid, libc::SIGKILL);
    }
}

/// Whether any process is left in group `pgid`.
#[allow(unsafe_code)]
pub fn group_exists(pgid: u32) -> bool {
    let Ok(pgid) = libc::pid_t::try_from(pgid) else {
        return false;
    };
    if pgid <= 1 {
        return false;
    }
    // SAFETY: signal 0 only checks that the group exists and may be signalled.
    let result = unsafe { libc::killpg(pgid, 0) };
    result == 0 || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
}

/// Whether a process with this pid exists.
#[allow(unsafe_code)]
pub fn pid_alive(pid: i32) -> bool {
    if pid <= 0 {
        return false;
    }
    // SAFETY: signal 0 sends nothing; it checks the process exists.
    let result = unsafe { libc::kill(pid, 0) };
    result == 0 || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
}
