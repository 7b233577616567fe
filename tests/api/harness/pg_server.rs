//! A PostgreSQL server of the test's own, which it may stop, start and
//! restart at will: outages are tried here, never on the shared server
//! the rest of the suite uses.
//!
//! The server runs from the installed binaries (`pg_config --bindir`, else
//! the newest `/usr/lib/postgresql/*/bin`) on a fresh cluster in a
//! temporary directory, on a free port of 127.0.0.1 with trust auth. As
//! root (PostgreSQL refuses to run as root) it runs as the `postgres`
//! user. It is stopped at once when the value is dropped.

use std::path::{Path, PathBuf};
use std::process::Command;

/// A private PostgreSQL server.
pub struct PgServer {
    bin: PathBuf,
    /// Holds the cluster (`data/`) and the socket directory.
    dir: tempfile::TempDir,
    port: u16,
}

impl PgServer {
    /// Makes a cluster and starts the server.
    pub fn start() -> Self {
        let bin = bin_dir();
        let dir = tempfile::Builder::new()
            .prefix("dsr-pg-")
            .tempdir()
            .expect("temporary directory");
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let server = Self { bin, dir, port };
        if is_root() {
            run(Command::new("chown")
                .args(["postgres:postgres"])
                .arg(server.dir.path()));
        }
        server.pg(
            "initdb",
            &[
                "-D",
                &server.data(),
                "--auth=trust",
                "--username=postgres",
                "--no-sync",
            ],
        );
        server.start_again();
        server
    }

    /// A URL of database `name` on this server.
    pub fn url(&self, name: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{name}", self.port)
    }

    /// Creates database `name`.
    pub fn create_database(&self, name: &str) {
        self.pg(
            "createdb",
            &[
                "-h",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-U",
                "postgres",
                name,
            ],
        );
    }

    /// Stops the server as an administrator's shutdown does: connections
    /// are ended (`terminating connection due to administrator command`)
    /// and new ones refused until [`PgServer::start_again`].
    pub fn stop(&self) {
        self.pg_ctl(&["stop", "-m", "fast", "-w"]);
    }

    /// Starts the stopped server and waits until it takes connections.
    pub fn start_again(&self) {
        let options = format!(
            "-c listen_addresses=127.0.0.1 -p {} -k {} -c fsync=off",
            self.port,
            self.dir.path().display()
        );
        let log = self.dir.path().join("server.log");
        self.pg_ctl(&[
            "start",
            "-w",
            "-o",
            &options,
            "-l",
            &log.display().to_string(),
        ]);
    }

    /// Stops and starts the server, ending every connection.
    pub fn restart(&self) {
        self.stop();
        self.start_again();
    }

    fn data(&self) -> String {
        self.dir.path().join("data").display().to_string()
    }

    fn pg_ctl(&self, args: &[&str]) {
        let data = self.data();
        let mut all = vec!["-D", data.as_str()];
        all.extend_from_slice(args);
        self.pg("pg_ctl", &all);
    }

    /// Runs one of the server's programs, as `postgres` when we are root.
    fn pg(&self, program: &str, args: &[&str]) {
        let path = self.bin.join(program);
        let mut command = if is_root() {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(&path);
            c
        } else {
            Command::new(&path)
        };
        run(command.args(args).current_dir(self.dir.path()));
    }
}

impl Drop for PgServer {
    fn drop(&mut self) {
        let data = self.data();
        let path = self.bin.join("pg_ctl");
        let mut command = if is_root() {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(&path);
            c
        } else {
            Command::new(&path)
        };
        let _ = command
            .args(["-D", &data, "stop", "-m", "immediate", "-w"])
            .output();
    }
}

/// Runs `command`, panicking with its output when it fails.
fn run(command: &mut Command) {
    let output = command.output().expect("run a PostgreSQL program");
    assert!(
        output.status.success(),
        "{command:?} failed: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// Whether this process runs as root (asked of `id`, to need no libc).
fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

/// Where the server's programs are.
fn bin_dir() -> PathBuf {
    if let Ok(output) = Command::new("pg_config").arg("--bindir").output()
        && output.status.success()
    {
        let dir = PathBuf::from(String::from_utf8_lossy(&output.stdout).trim());
        if dir.join("initdb").is_file() {
            return dir;
        }
    }
    let mut installed: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .map(|entries| entries.flatten().map(|e| e.path().join("bin")).collect())
        .unwrap_or_default();
    installed.retain(|p: &PathBuf| Path::new(p).join("initdb").is_file());
    installed.sort();
    installed
        .pop()
        .expect("PostgreSQL's server programs (initdb, pg_ctl) are installed")
}
