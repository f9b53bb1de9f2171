//! A PostgreSQL cluster of a test's own (initdb in a temp dir, a free loopback port), for tests
//! that stop and start the database under running workers: the shared server of the other tests
//! must not be restarted under them. Made the way scripts/test.sh makes its throwaway cluster
//! (as the `postgres` user when the tests run as root: initdb refuses root).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

pub struct PrivatePostgres {
    dir: tempfile::TempDir,
    bindir: PathBuf,
    pub port: u16,
    as_postgres: bool,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or_else(|e| panic!("{e}"))
}

impl PrivatePostgres {
    /// Starts a new cluster and waits until it takes connections.
    pub fn start() -> PrivatePostgres {
        let bindir = std::fs::read_dir("/usr/lib/postgresql")
            .unwrap_or_else(|e| panic!("/usr/lib/postgresql: {e} (install postgresql)"))
            .flatten()
            .map(|e| e.path().join("bin"))
            .filter(|b| b.join("initdb").exists())
            .max()
            .unwrap_or_else(|| panic!("no initdb under /usr/lib/postgresql/*/bin"));
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        // SAFETY: geteuid has no preconditions.
        let as_postgres = unsafe { libc::geteuid() } == 0;
        let pg = PrivatePostgres {
            dir,
            bindir,
            port: free_port(),
            as_postgres,
        };
        std::fs::set_permissions(
            pg.dir.path(),
            std::os::unix::fs::PermissionsExt::from_mode(0o777),
        )
        .unwrap_or_else(|e| panic!("{e}"));
        if as_postgres {
            let exists = Command::new("id")
                .arg("postgres")
                .output()
                .is_ok_and(|o| o.status.success());
            if !exists {
                let _ = Command::new("useradd")
                    .args(["--system", "postgres"])
                    .status();
            }
        }
        let data = pg.data();
        pg.run(
            "initdb",
            &[
                "-D",
                &data.display().to_string(),
                "-U",
                "postgres",
                "--auth=trust",
                "-E",
                "UTF8",
            ],
        );
        pg.start_again();
        pg
    }

    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// A PostgreSQL tool, run as `postgres` when the tests run as root.
    fn tool(&self, tool: &str) -> Command {
        let bin = self.bindir.join(tool);
        if self.as_postgres {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(&bin);
            c
        } else {
            Command::new(&bin)
        }
    }

    fn run(&self, tool: &str, args: &[&str]) {
        let out = self
            .tool(tool)
            .args(args)
            .output()
            .unwrap_or_else(|e| panic!("{tool}: {e}"));
        assert!(
            out.status.success(),
            "{tool} {args:?}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// `postgres://postgres@127.0.0.1:PORT` (the admin database).
    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}", self.port)
    }

    /// Starts the server (again) on the same port and data, and waits for it.
    pub fn start_again(&self) {
        let data = self.data().display().to_string();
        let log = self.dir.path().join("log").display().to_string();
        let opts = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=100",
            self.port,
            self.dir.path().display()
        );
        self.run(
            "pg_ctl",
            &["-D", &data, "-l", &log, "-w", "-o", &opts, "start"],
        );
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(Instant::now() < deadline, "PostgreSQL did not come up");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Stops the server at once (`immediate`: like a crash; open connections break).
    pub fn stop(&self) {
        let data = self.data().display().to_string();
        self.run("pg_ctl", &["-D", &data, "-m", "immediate", "-w", "stop"]);
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for PrivatePostgres {
    fn drop(&mut self) {
        let data = self.data().display().to_string();
        let _ = self
            .tool("pg_ctl")
            .args(["-D", &data, "-m", "immediate", "stop"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status();
    }
}
