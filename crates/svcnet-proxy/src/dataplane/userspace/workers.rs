//! The data path's own threads: one single-threaded tokio runtime per CPU the process may use.
//!
//! Forwarding is many tiny tasks woken by socket readiness. On a work-stealing runtime every
//! wake-up may cross threads (futex wake, another thread's cache), and with fewer CPUs than
//! worker threads (a proxy pinned with `taskset`, a CPU quota) the threads also fight for the
//! CPU. One `current_thread` runtime per usable CPU, each with its own listeners
//! (`SO_REUSEPORT` when there is more than one), keeps a connection on the thread that
//! accepted it, which is how HAProxy and nginx run. The control plane (watch, plan, apply)
//! stays on the caller's runtime and only spawns listeners onto these threads.
//! Not here: pinning threads to CPUs (the kernel places them; the process affinity is kept).

use tokio::runtime::Handle;
use tokio_util::sync::CancellationToken;

/// Running data-path threads; they stop (and drop their connections) when `stop` is cancelled
/// or this value is dropped.
pub(super) struct Workers {
    handles: Vec<Handle>,
    stop: CancellationToken,
}

impl Workers {
    /// Starts `count` threads (0 = one per CPU this process may run on).
    pub(super) fn start(count: usize, stop: CancellationToken) -> std::io::Result<Self> {
        let count = if count == 0 { usable_cpus() } else { count };
        let mut handles = Vec::with_capacity(count);
        for i in 0..count {
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
            handles.push(runtime.handle().clone());
            let stop = stop.clone();
            std::thread::Builder::new()
                .name(format!("svcnet-dp-{i}"))
                .spawn(move || runtime.block_on(stop.cancelled_owned()))?;
        }
        tracing::debug!(threads = count, "userspace data path started");
        Ok(Workers { handles, stop })
    }

    /// The runtimes, one per thread; never empty.
    pub(super) fn handles(&self) -> &[Handle] {
        &self.handles
    }
}

impl Drop for Workers {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// CPUs in this process's affinity mask (and CPU quota), at least 1.
fn usable_cpus() -> usize {
    std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1)
}
