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

/// Whether a process that still runs is left in group `pgid`. A killed member whose
/// parent exited is a zombie until the system's init reaps it (which can take seconds
/// in a container): it runs nothing and holds nothing, so it does not count.
pub fn group_alive(pgid: u32) -> bool {
    if !group_exists(pgid) {
        return false;
    }
    let Ok(entries) = std::fs::read_dir("/proc") else {
        // Without /proc, trust the signal check.
        return true;
    };
    entries.flatten().any(|entry| {
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            return false;
        };
        // "pid (comm) state ppid pgrp ...": comm may hold spaces and parentheses.
        let Some((_, rest)) = stat.rsplit_once(')') else {
            return false;
        };
        let mut fields = rest.split_whitespace();
        let state = fields.next();
        let group = fields.nth(1).and_then(|group| group.parse::<u32>().ok());
        group == Some(pgid) && state != Some("Z") && state != Some("X")
    })
}

/// Whether any process (a zombie included) is left in group `pgid`.
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::process::CommandExt;
    use std::time::{Duration, Instant};

    /// A group whose only member left is a killed process waiting to be reaped (a
    /// zombie) is over: waiting for init to reap it cost every docker-machine call two
    /// seconds in containers whose init reaps slowly.
    #[test]
    fn a_group_of_zombies_is_not_alive() {
        // The leader starts a short-lived child it never reaps, then becomes `sleep`.
        let mut leader = std::process::Command::new("sh")
            .args(["-c", "sleep 0.05 & exec sleep 30"])
            .process_group(0)
            .spawn()
            .expect("sh");
        let pgid = leader.id();
        std::thread::sleep(Duration::from_millis(300));
        assert!(group_alive(pgid), "the leader runs");
        kill_group(pgid);
        leader.wait().expect("reaped");
        let started = Instant::now();
        while group_alive(pgid) {
            assert!(
                started.elapsed() < Duration::from_millis(500),
                "a group with only zombies left counts as alive"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}
