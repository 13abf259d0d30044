//! A real `redis-server` of the test's own, on 127.0.0.1, in a temporary
//! directory, with persistence (an append-only file fsynced on every
//! write, as docs/scaling.md asks of a cluster's Redis), stopped when
//! dropped. Restartable on the same port and data.

use std::time::Duration;

use tokio::io::AsyncBufReadExt;

pub(crate) struct Redis {
    pub dir: tempfile::TempDir,
    pub port: u16,
    child: Option<tokio::process::Child>,
}

impl Redis {
    pub(crate) async fn start() -> Redis {
        let mut dir = tempfile::Builder::new()
            .prefix("baton-redis-")
            .tempdir()
            .unwrap();
        // redis-server cannot take port 0: take a free port from the
        // kernel and hand it over (retried if another process wins it).
        for _ in 0..5 {
            let port = std::net::TcpListener::bind("127.0.0.1:0")
                .unwrap()
                .local_addr()
                .unwrap()
                .port();
            let mut r = Redis {
                dir,
                port,
                child: None,
            };
            if r.launch().await {
                return r;
            }
            dir = r.dir;
        }
        panic!("redis-server did not start");
    }

    pub(crate) fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    /// Starts the server (again); true once it accepts connections.
    async fn launch(&mut self) -> bool {
        let mut child = tokio::process::Command::new("redis-server")
            .args(["--bind", "127.0.0.1", "--port"])
            .arg(self.port.to_string())
            .args([
                "--save",
                "",
                "--appendonly",
                "yes",
                "--appendfsync",
                "always",
                "--daemonize",
                "no",
                "--protected-mode",
                "yes",
                "--dir",
            ])
            .arg(self.dir.path())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("redis-server is installed (.ci/run installs it)");
        let mut lines = tokio::io::BufReader::new(child.stdout.take().unwrap()).lines();
        let ready = tokio::time::timeout(Duration::from_secs(20), async {
            while let Ok(Some(l)) = lines.next_line().await {
                if l.contains("Ready to accept connections") {
                    return true;
                }
            }
            false
        })
        .await
        .unwrap_or(false);
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        if ready {
            self.child = Some(child);
        } else {
            let _ = child.kill().await;
        }
        ready
    }

    /// Kills the server (`SIGKILL`: what it wrote is fsynced).
    pub(crate) async fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill().await;
            let _ = c.wait().await;
        }
    }

    /// Starts it again on the same port and data.
    pub(crate) async fn restart(&mut self) {
        self.kill().await;
        assert!(self.launch().await, "redis-server did not restart");
    }

    /// A plain connection for the test's own checks.
    pub(crate) async fn conn(&self) -> redis::aio::MultiplexedConnection {
        redis::Client::open(self.url())
            .unwrap()
            .get_multiplexed_async_connection()
            .await
            .unwrap()
    }
}
