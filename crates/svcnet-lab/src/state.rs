//! What `lab up` created, kept in the lab's data dir so that `lab down` can remove it even
//! after `lab up` crashed half-way.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::topology::Topology;
use crate::{Error, Result};

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LabState {
    pub topology: Topology,
    /// Processes the lab started (server, node agents, the loopback forward).
    pub processes: Vec<LabProcess>,
    /// The 127.0.0.1 port forwarded to the API server in `control-plane`.
    pub forward_port: Option<u16>,
    /// Hosts cut off with `lab fail` (and not healed since).
    #[serde(default)]
    pub failed: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LabProcess {
    pub name: String,
    pub pid: i32,
}

fn path(data_dir: &Path) -> PathBuf {
    data_dir.join("lab.json")
}

impl LabState {
    pub fn load(data_dir: &Path) -> Result<Option<LabState>> {
        let p = path(data_dir);
        match std::fs::read(&p) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map(Some)
                .map_err(|e| Error::Internal(format!("corrupt lab state {}: {e}", p.display()))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(source) => Err(Error::State { path: p.display().to_string(), source }),
        }
    }

    /// Writes the state atomically (temporary file, then rename).
    pub fn save(&self, data_dir: &Path) -> Result<()> {
        let p = path(data_dir);
        let err = |source| Error::State { path: p.display().to_string(), source };
        std::fs::create_dir_all(data_dir).map_err(err)?;
        let tmp = data_dir.join("lab.json.tmp");
        let bytes = serde_json::to_vec_pretty(self).map_err(|e| Error::Internal(e.to_string()))?;
        std::fs::write(&tmp, bytes).map_err(err)?;
        std::fs::rename(&tmp, &p).map_err(err)
    }

    pub fn remove(data_dir: &Path) -> Result<()> {
        let p = path(data_dir);
        match std::fs::remove_file(&p) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(source) => Err(Error::State { path: p.display().to_string(), source }),
        }
    }

    /// Stops the recorded processes: SIGTERM, then SIGKILL for those still alive.
    pub async fn stop_processes(&self) {
        use nix::sys::signal::{Signal, kill};
        use nix::unistd::Pid;
        for p in &self.processes {
            let _ = kill(Pid::from_raw(p.pid), Signal::SIGTERM);
        }
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(5);
        for p in &self.processes {
            while kill(Pid::from_raw(p.pid), None).is_ok() && tokio::time::Instant::now() < deadline
            {
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
            let _ = kill(Pid::from_raw(p.pid), Signal::SIGKILL);
        }
    }
}
