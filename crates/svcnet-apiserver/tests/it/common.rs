//! A fresh server per test and a kubectl runner with a private cache directory.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio_util::sync::CancellationToken;

pub struct TestServer {
    pub handle: svcnet_apiserver::ServerHandle,
    pub dir: tempfile::TempDir,
    cancel: CancellationToken,
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

impl TestServer {
    pub async fn start() -> TestServer {
        Self::start_with(|_| {}).await
    }

    pub async fn start_with(f: impl FnOnce(&mut svcnet_apiserver::Config)) -> TestServer {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut config = svcnet_apiserver::Config {
            data_dir: dir.path().join("data"),
            listen: "127.0.0.1:0".parse().expect("addr"),
            ..Default::default()
        };
        f(&mut config);
        let cancel = CancellationToken::new();
        let handle = svcnet_apiserver::start(config, cancel.clone()).await.expect("server starts");
        TestServer { handle, dir, cancel }
    }

    pub async fn client(&self) -> kube::Client {
        let kc = kube::config::Kubeconfig::read_from(&self.handle.kubeconfig).expect("kubeconfig");
        let config = kube::Config::from_custom_kubeconfig(kc, &Default::default())
            .await
            .expect("kube config");
        kube::Client::try_from(config).expect("client")
    }

    pub fn kubectl(&self, bin: &str) -> Kubectl {
        let cache = self.dir.path().join(format!("cache-{}", bin.replace('/', "_")));
        Kubectl {
            bin: bin.to_string(),
            kubeconfig: self.handle.kubeconfig.clone(),
            cache,
            work: self.dir.path().to_path_buf(),
        }
    }
}

/// One kubectl binary bound to a server, with its own cache directory.
pub struct Kubectl {
    pub bin: String,
    pub kubeconfig: PathBuf,
    pub cache: PathBuf,
    pub work: PathBuf,
}

#[derive(Debug)]
pub struct Out {
    pub ok: bool,
    pub stdout: String,
    pub stderr: String,
}

impl Out {
    pub fn all(&self) -> String {
        format!("{}{}", self.stdout, self.stderr)
    }
}

impl Kubectl {
    pub fn command(&self, args: &[&str]) -> tokio::process::Command {
        let mut c = tokio::process::Command::new(&self.bin);
        c.arg("--kubeconfig").arg(&self.kubeconfig).arg("--cache-dir").arg(&self.cache).args(args);
        c.env_remove("KUBECONFIG")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        c
    }

    pub async fn run_env(&self, args: &[&str], stdin: Option<&str>, env: &[(&str, &str)]) -> Out {
        let mut c = self.command(args);
        for (k, v) in env {
            c.env(k, v);
        }
        let mut child = c.spawn().unwrap_or_else(|e| panic!("cannot run {}: {e}", self.bin));
        let mut input = child.stdin.take().expect("stdin");
        let data = stdin.unwrap_or("").to_string();
        tokio::spawn(async move {
            let _ = input.write_all(data.as_bytes()).await;
        });
        let out = tokio::time::timeout(Duration::from_secs(60), child.wait_with_output())
            .await
            .expect("kubectl finished in time")
            .expect("kubectl output");
        Out {
            ok: out.status.success(),
            stdout: String::from_utf8_lossy(&out.stdout).into(),
            stderr: String::from_utf8_lossy(&out.stderr).into(),
        }
    }

    pub async fn run(&self, args: &[&str]) -> Out {
        self.run_env(args, None, &[]).await
    }

    pub async fn stdin(&self, args: &[&str], input: &str) -> Out {
        self.run_env(args, Some(input), &[]).await
    }

    /// Runs and asserts success.
    pub async fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args).await;
        assert!(out.ok, "{} {:?} failed:\n{}", self.bin, args, out.all());
        out.stdout
    }

    pub async fn ok_stdin(&self, args: &[&str], input: &str) -> String {
        let out = self.stdin(args, input).await;
        assert!(out.ok, "{} {:?} failed:\n{}", self.bin, args, out.all());
        out.stdout
    }

    pub async fn fails(&self, args: &[&str], input: Option<&str>) -> String {
        let out = self.run_env(args, input, &[]).await;
        assert!(!out.ok, "{} {:?} should fail:\n{}", self.bin, args, out.all());
        out.all()
    }

    pub fn write(&self, name: &str, text: &str) -> PathBuf {
        let p = self.work.join(name);
        std::fs::write(&p, text).expect("write file");
        p
    }
}

/// The kubectl binaries to run the battery with: the machine's `kubectl` and, if present, the
/// versioned 1.29 and 1.33 binaries (called directly; the dispatcher would pick 1.32).
pub fn kubectl_binary(version: Option<&str>) -> Option<String> {
    match version {
        None => Some("kubectl".to_string()),
        Some(v) => {
            let p = format!("/usr/lib/google-cloud-sdk/bin/kubectl.{v}");
            Path::new(&p).exists().then_some(p)
        }
    }
}
