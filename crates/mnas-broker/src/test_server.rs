//! A private `redis-server` for tests and benchmarks: started on a Unix socket in its own
//! directory, stopped by its pid when dropped (or on [`TestServer::kill`]).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// What to do when `redis-server` is missing: the tests that need one fail with this.
pub const INSTALL: &str =
    "redis-server not found: install it (Debian: `apt-get install -y --no-install-recommends redis-server`)";

pub struct TestServer {
    pub dir: PathBuf,
    pub socket: PathBuf,
    pub password: Option<String>,
    appendonly: bool,
    pid: Option<u32>,
}

fn pid_of(dir: &Path) -> Option<u32> {
    std::fs::read_to_string(dir.join("redis.pid")).ok()?.trim().parse().ok()
}

impl TestServer {
    /// Starts a server in `dir` (created), optionally with a password and an append-only file.
    pub fn start(dir: &Path, password: Option<&str>, appendonly: bool) -> Result<TestServer, String> {
        std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        let mut server = TestServer {
            dir: dir.to_path_buf(),
            socket: dir.join("redis.sock"),
            password: password.map(str::to_string),
            appendonly,
            pid: None,
        };
        server.launch()?;
        Ok(server)
    }

    fn launch(&mut self) -> Result<(), String> {
        let _ = std::fs::remove_file(&self.socket);
        let _ = std::fs::remove_file(self.dir.join("redis.pid"));
        let mut cmd = Command::new("redis-server");
        cmd.args(["--port", "0", "--unixsocket"])
            .arg(&self.socket)
            .args(["--unixsocketperm", "700", "--save", "", "--daemonize", "yes", "--dir"])
            .arg(&self.dir)
            .arg("--pidfile")
            .arg(self.dir.join("redis.pid"))
            .arg("--logfile")
            .arg(self.dir.join("redis.log"))
            .args(["--appendonly", if self.appendonly { "yes" } else { "no" }, "--appendfsync", "always"]);
        if let Some(p) = &self.password {
            cmd.args(["--requirepass", p]);
        }
        let status = cmd.status().map_err(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                INSTALL.to_string()
            } else {
                format!("cannot start redis-server: {e}")
            }
        })?;
        if !status.success() {
            return Err(format!("redis-server exited with {status}"));
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let (true, Some(pid)) = (self.socket.exists(), pid_of(&self.dir)) {
                self.pid = Some(pid);
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Err(format!("redis-server did not come up in {} (see redis.log)", self.dir.display()))
    }

    /// The URL of the server, with its password.
    pub fn url(&self) -> String {
        match &self.password {
            Some(p) => format!("unix://{}?pass={p}", self.socket.display()),
            None => format!("unix://{}", self.socket.display()),
        }
    }

    /// The server's pid.
    pub fn pid(&self) -> Option<u32> {
        self.pid
    }

    /// Stops the server by its pid (SIGKILL when `hard`, else SIGTERM) and waits until it is gone.
    pub fn stop(&mut self, hard: bool) {
        if let Some(pid) = self.pid.take() {
            let _ = Command::new("kill").args([if hard { "-9" } else { "-15" }, &pid.to_string()]).status();
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline && Path::new(&format!("/proc/{pid}")).exists() {
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }

    /// Stops the server (SIGTERM) and starts it again on the same socket and data directory.
    pub fn restart(&mut self) -> Result<(), String> {
        self.stop(false);
        self.launch()
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.stop(true);
    }
}
