//! The cost of one SMTP hand-over (the final dot and its journal line): made by a
//! `clone(CLONE_VM | CLONE_VFORK)` child, as the worker does, and by the process itself, as it
//! does when no child can be started. `cargo bench --bench handover`.

use std::io::Read;
use std::os::fd::AsRawFd;

use criterion::{Criterion, criterion_group, criterion_main};
use postdesk::outbound::deliver::handover::{send_and_record, send_and_record_in_process};

fn bench(c: &mut Criterion) {
    // The "server": the other end of a socket pair, drained by a thread.
    let (client, mut server) =
        std::os::unix::net::UnixStream::pair().unwrap_or_else(|e| panic!("{e}"));
    std::thread::spawn(move || {
        let mut buf = [0u8; 65536];
        while matches!(server.read(&mut buf), Ok(n) if n > 0) {}
    });
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let journal = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.path().join("journal"))
        .unwrap_or_else(|e| panic!("{e}"));
    let (sock, jfd) = (client.as_raw_fd(), journal.as_raw_fd());
    let mut g = c.benchmark_group("handover");
    g.bench_function("child", |b| {
        b.iter(|| send_and_record(sock, b"\r\n.\r\n", jfd, b"+12345\n"))
    });
    g.bench_function("in_process", |b| {
        b.iter(|| send_and_record_in_process(sock, b"\r\n.\r\n", jfd, b"+12345\n"))
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
