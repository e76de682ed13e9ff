//! Cleanup of what an earlier run of the agent left behind after a crash or SIGKILL.
//!
//! Every container process is recorded in `<data_dir>/run/pids/` as `PID STARTTIME` (the
//! start time from `/proc/PID/stat` guards against a reused PID), and every pod network
//! namespace as a file in `<data_dir>/run/netns/`. On start the agent kills each recorded
//! process group that is still the same process and deletes each recorded namespace.

use std::path::Path;

use nix::sys::signal::Signal;

/// The start time (in clock ticks since boot) of a process, from `/proc/PID/stat`.
pub fn process_start_time(pid: i32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    parse_start_time(&stat)
}

/// Field 22 of `/proc/PID/stat`, counted after the parenthesised command name.
pub fn parse_start_time(stat: &str) -> Option<u64> {
    let after_comm = &stat[stat.rfind(')')? + 1..];
    after_comm.split_whitespace().nth(19)?.parse().ok()
}

/// Records a started process.
pub fn record(pid_file: &Path, pid: i32) {
    let Some(start_time) = process_start_time(pid) else { return };
    if let Some(dir) = pid_file.parent() {
        let _ = std::fs::create_dir_all(dir);
    }
    if let Err(err) = std::fs::write(pid_file, format!("{pid} {start_time}\n")) {
        tracing::warn!(path = %pid_file.display(), error = %err, "cannot record a pod process");
    }
}

/// Forgets a process that has ended.
pub fn forget(pid_file: &Path) {
    let _ = std::fs::remove_file(pid_file);
}

/// Records a pod network namespace.
pub fn record_netns(data_dir: &Path, netns: &str) {
    let dir = data_dir.join("run").join("netns");
    let _ = std::fs::create_dir_all(&dir);
    let _ = std::fs::write(dir.join(netns), b"");
}

/// Forgets a deleted pod network namespace.
pub fn forget_netns(data_dir: &Path, netns: &str) {
    let _ = std::fs::remove_file(data_dir.join("run").join("netns").join(netns));
}

/// Kills recorded process groups and deletes recorded namespaces; returns how many of each.
pub async fn cleanup(data_dir: &Path) -> (usize, usize) {
    let mut killed = 0;
    if let Ok(entries) = std::fs::read_dir(data_dir.join("run").join("pids")) {
        for entry in entries.flatten() {
            let path = entry.path();
            let text = std::fs::read_to_string(&path).unwrap_or_default();
            let mut fields = text.split_whitespace();
            let pid: Option<i32> = fields.next().and_then(|f| f.parse().ok());
            let start: Option<u64> = fields.next().and_then(|f| f.parse().ok());
            if let (Some(pid), Some(start)) = (pid, start)
                && pid > 1
                && process_start_time(pid) == Some(start)
            {
                let _ = nix::sys::signal::killpg(nix::unistd::Pid::from_raw(pid), Signal::SIGKILL);
                killed += 1;
            }
            let _ = std::fs::remove_file(&path);
        }
    }
    let mut namespaces = 0;
    if let Ok(entries) = std::fs::read_dir(data_dir.join("run").join("netns")) {
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().to_string();
            super::network::teardown_pod_netns(&name).await;
            let _ = std::fs::remove_file(entry.path());
            namespaces += 1;
        }
    }
    (killed, namespaces)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_start_time_after_odd_names() {
        let stat =
            "1234 (a b) c) S 1 1234 1234 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 98765 1000 200";
        assert_eq!(parse_start_time(stat), Some(98765));
        assert_eq!(parse_start_time("garbage"), None);
        assert!(process_start_time(i32::try_from(std::process::id()).unwrap()).is_some());
    }
}
