//! Crash safety (SPEC: "Nothing is lost"): `postdesk run` over a maildir of 500 messages, killed
//! with SIGKILL at random moments and restarted until done, makes exactly 500 tickets and 500
//! acknowledgement files, with no duplicate.

mod common;

use std::collections::HashSet;
use std::time::{Duration, Instant};

use common::{Sandbox, customer_mail};

const MESSAGES: usize = 500;

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn between(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next() % (hi - lo)
    }
}

fn count(dir: &std::path::Path) -> usize {
    std::fs::read_dir(dir).map(|d| d.count()).unwrap_or(0)
}

#[test]
fn sigkill_at_random_moments_loses_nothing_and_duplicates_nothing() {
    let sb = Sandbox::new();
    let new = sb.maildir().join("new");
    std::fs::create_dir_all(&new).unwrap();
    std::fs::create_dir_all(sb.maildir().join("cur")).unwrap();
    std::fs::create_dir_all(sb.maildir().join("tmp")).unwrap();
    for i in 0..MESSAGES {
        let subject = ["SEV 3 crash test", "[SEV 1] crash test", "no severity here"][i % 3];
        let raw = customer_mail(
            &format!("user{i}@acme.test"),
            subject,
            &format!("crash-{i}@acme.test"),
        );
        std::fs::write(new.join(format!("{:06}.crash.localhost", i)), raw).unwrap();
    }

    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(1)
        | 1;
    eprintln!("crash test seed {seed}");
    let mut rng = Rng(seed);
    let mut kills_mid_work = 0;
    let started = Instant::now();
    for round in 0..60 {
        let remaining_before = count(&new);
        let unsent_before = MESSAGES - sb.outbox_files().len();
        if remaining_before == 0 && unsent_before == 0 {
            break;
        }
        let mut child = sb
            .command(&["run"])
            .env("POSTDESK_WORKER_BATCH_SIZE", "8")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(rng.between(20, 250)));
        child.kill().unwrap(); // SIGKILL
        let status = child.wait().unwrap();
        let remaining = count(&new);
        let files = sb.outbox_files().len();
        if remaining > 0 || files < MESSAGES {
            kills_mid_work += 1;
        }
        eprintln!(
            "round {round}: killed ({status}); {remaining} messages left in new/, {files} acknowledgement files"
        );
    }
    // Finish whatever is left, then check.
    let out = sb.run(&["run", "--exit-when-idle"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    eprintln!(
        "{kills_mid_work} kills with work in progress, {:.1}s in all",
        started.elapsed().as_secs_f64()
    );
    assert!(
        kills_mid_work >= 3,
        "the worker finished before it could be killed mid-work"
    );

    assert_eq!(count(&new), 0, "messages left in new/");
    assert_eq!(count(&sb.maildir().join("cur")), MESSAGES);
    let tickets = sb.tickets();
    assert_eq!(tickets.len(), MESSAGES, "tickets");
    let requesters: HashSet<&str> = tickets
        .iter()
        .map(|t| t["requester"].as_str().unwrap())
        .collect();
    assert_eq!(requesters.len(), MESSAGES, "one ticket per customer");

    let files = sb.outbox_files();
    assert_eq!(files.len(), MESSAGES, "acknowledgement files");
    let mut ids = HashSet::new();
    let mut recipients = HashSet::new();
    for f in &files {
        let raw = std::fs::read(f).unwrap();
        let msg = mail_parser::MessageParser::default().parse(&raw).unwrap();
        assert!(
            ids.insert(msg.message_id().unwrap().to_string()),
            "duplicate acknowledgement {}",
            f.display()
        );
        let to = msg
            .to()
            .unwrap()
            .first()
            .unwrap()
            .address()
            .unwrap()
            .to_string();
        assert!(
            recipients.insert(to),
            "two acknowledgements to one customer"
        );
    }
    let leftovers: Vec<_> = std::fs::read_dir(sb.outbox())
        .unwrap()
        .filter_map(Result::ok)
        .filter(|e| e.file_name().to_string_lossy().starts_with(".tmp-"))
        .collect();
    assert!(leftovers.is_empty(), "temp files left in the outbox");
}
