//! A sandbox for running the `postdesk` binary: its own temp dir, SQLite file, maildir, outbox,
//! and the repository's templates, all passed through the environment as a user would.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

pub const BIN: &str = env!("CARGO_BIN_EXE_postdesk");

pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

pub struct Sandbox {
    pub dir: tempfile::TempDir,
}

impl Sandbox {
    pub fn new() -> Sandbox {
        Sandbox {
            dir: tempfile::tempdir().unwrap(),
        }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn db(&self) -> PathBuf {
        self.path().join("postdesk.db")
    }

    pub fn maildir(&self) -> PathBuf {
        self.path().join("mail")
    }

    pub fn outbox(&self) -> PathBuf {
        self.path().join("outbox")
    }

    pub fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new(BIN);
        c.args(args)
            .current_dir(self.path())
            .env_remove("POSTDESK_CONFIG")
            .env(
                "POSTDESK_DATABASE_URL",
                format!("sqlite:{}", self.db().display()),
            )
            .env(
                "POSTDESK_MAILBOX_URL",
                format!("maildir:{}", self.maildir().display()),
            )
            .env(
                "POSTDESK_OUTBOX_URL",
                format!("file:{}", self.outbox().display()),
            )
            .env("POSTDESK_TEMPLATES_DIR", repo().join("templates"))
            .env("POSTDESK_LOG", "warn");
        c
    }

    pub fn run(&self, args: &[&str]) -> Output {
        self.command(args).output().unwrap()
    }

    pub fn run_stdin(&self, args: &[&str], input: &[u8]) -> Output {
        use std::io::Write;
        let mut child = self
            .command(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child.stdin.take().unwrap().write_all(input).unwrap();
        child.wait_with_output().unwrap()
    }

    pub fn json(&self, args: &[&str]) -> serde_json::Value {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "postdesk {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
            panic!(
                "postdesk {args:?} printed no JSON ({e}): {}",
                String::from_utf8_lossy(&out.stdout)
            )
        })
    }

    /// `tickets list --json`; no database yet is no tickets (the read-only command refuses to
    /// create one and says so).
    pub fn tickets(&self) -> Vec<serde_json::Value> {
        if !self.db().exists() {
            return Vec::new();
        }
        self.json(&["tickets", "list", "--json"])
            .as_array()
            .cloned()
            .unwrap_or_default()
    }

    pub fn outbox_files(&self) -> Vec<PathBuf> {
        let Ok(rd) = std::fs::read_dir(self.outbox()) else {
            return Vec::new();
        };
        let mut v: Vec<PathBuf> = rd
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|e| e == "eml"))
            .collect();
        v.sort();
        v
    }
}

pub fn code(out: &Output) -> i32 {
    out.status.code().unwrap_or(-1)
}

/// A plain customer message.
pub fn customer_mail(from: &str, subject: &str, message_id: &str) -> Vec<u8> {
    format!(
        "From: Customer <{from}>\r\nTo: support@example.com\r\nSubject: {subject}\r\nDate: Mon, 23 Nov 2026 10:00:00 +0000\r\nMessage-ID: <{message_id}>\r\nMIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nHello, something is broken.\r\n"
    )
    .into_bytes()
}
