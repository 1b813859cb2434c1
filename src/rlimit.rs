//! The open-file limit: each client connection, kept upstream connection and file is a
//! descriptor, and the soft limit many systems start a process with (1,024) would refuse
//! connections long before `server.max_connections`. `run` raises the soft limit to the
//! hard one at start; `check` says what the limit will be and whether it covers
//! `max_connections`.

/// The soft and hard limits on open files (`None` where they cannot be read).
pub fn open_files() -> Option<(u64, u64)> {
    let mut l = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the struct it is given and reads nothing else.
    let rc = unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut l) };
    (rc == 0).then_some((l.rlim_cur, l.rlim_max))
}

/// Raises the soft limit to the hard one; returns the limit now in force.
pub fn raise_open_files() -> Option<u64> {
    let (soft, hard) = open_files()?;
    if soft >= hard {
        return Some(soft);
    }
    let l = libc::rlimit {
        rlim_cur: hard,
        rlim_max: hard,
    };
    // SAFETY: setrlimit reads the struct it is given; raising the soft limit up to the
    // hard one needs no privilege.
    let rc = unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &l) };
    Some(if rc == 0 { hard } else { soft })
}

/// What `check` prints: the limit `run` will have, against what the config asks for. Each
/// client connection can take a second descriptor for its upstream exchange.
pub fn describe(max_connections: usize) -> String {
    let Some((soft, hard)) = open_files() else {
        return "open files: the limit cannot be read".to_string();
    };
    let need = max_connections as u64 * 2 + 256;
    let raised = if hard > soft {
        format!("{hard} (raised at start from {soft})")
    } else {
        hard.to_string()
    };
    if hard >= need {
        format!("open files {raised}: room for max_connections = {max_connections}")
    } else {
        format!(
            "open files {raised}: below the ~{need} that max_connections = {max_connections} may need (a client and an upstream connection each); raise the hard limit (LimitNOFILE=, ulimit -Hn)"
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_soft_limit_is_raised_to_the_hard_one() {
        let (_, hard) = open_files().expect("readable");
        assert_eq!(raise_open_files(), Some(hard));
        assert_eq!(open_files(), Some((hard, hard)));
        assert!(describe(10).contains("room for max_connections = 10"));
        assert!(describe(usize::MAX / 4).contains("raise the hard limit"));
    }
}
