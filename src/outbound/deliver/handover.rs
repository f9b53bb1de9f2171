//! The hand-over of one mail to an SMTP server, as one step the worker's death cannot split.
//!
//! A server takes responsibility for a message when it reads the final `.` of DATA, and the
//! outbox must know afterwards whether that happened. Two effects have to go together: the
//! write of the final dot to the socket and the line in the hand-over journal that says so.
//! Done one after the other by the worker, a SIGKILL (or a crash in another thread) can fall
//! between them: a journal line without a dot loses the mail; a dot without a line sends it
//! twice. Under load that gap is not microseconds but a whole scheduler time slice whenever the
//! thread is pre-empted there.
//!
//! So both writes are made by a short-lived child that shares the worker's memory and is
//! created with `clone(CLONE_VM | CLONE_VFORK)`, as `posix_spawn` does: the calling thread
//! waits for it (tens of microseconds), and because the child is a process of its own, killing
//! the worker does not stop it. It holds its own references to the socket and the journal, so
//! it finishes both writes whatever happens to the worker; when the worker dies, the kernel
//! then still delivers the dot. The child first sends (non-blocking), then writes the journal
//! line only if bytes went out; if it cannot be created at all, the same two writes are made in
//! the worker and a warning says the gap is back.
//!
//! [`HandoverTcp`] is the socket under lettre (and under TLS, so the dot is already encrypted
//! when it gets here): once [`Handover::arm`] was called, its next write is made this way.
//!
//! The line is written only when the whole final write went out: a partial send leaves the
//! rest to an ordinary write, and the row is then marked sent in the database once the server
//! answers 250 (a crash in between sends it again, with the same Message-ID: a duplicate, never
//! a loss). The child is Linux-only (`clone`); on other Unix systems the worker makes the two
//! writes itself, with the same at-least-once outcome and a window in which a kill can cost one
//! duplicate.

use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::task::{Context, Poll, ready};

use tokio::io::{AsyncRead, AsyncWrite, Interest, ReadBuf};
use tokio::net::TcpStream;

/// One connection's hand-over state: the outbox row whose final dot is next, and whether its
/// journal line was written.
#[derive(Debug)]
pub struct Handover {
    /// The journal, held open for as long as any connection may write to it.
    journal: Arc<File>,
    /// The row id armed for the next write, 0 when none.
    armed: AtomicI64,
    recorded: AtomicBool,
}

impl Handover {
    /// A hand-over slot writing its lines to `journal` (a file opened for appending).
    pub fn new(journal: Arc<File>) -> Arc<Handover> {
        Arc::new(Handover {
            journal,
            armed: AtomicI64::new(0),
            recorded: AtomicBool::new(false),
        })
    }

    /// The next write on the socket carries row `id`'s final dot.
    pub fn arm(&self, id: i64) {
        self.recorded.store(false, Ordering::SeqCst);
        self.armed.store(id, Ordering::SeqCst);
    }

    /// Ends an attempt: forgets an armed row whose dot was never written and says whether the
    /// last armed row's dot went out together with its journal line.
    pub fn finish(&self) -> bool {
        self.armed.store(0, Ordering::SeqCst);
        self.recorded.swap(false, Ordering::SeqCst)
    }
}

/// A TCP connection to the SMTP server whose armed write is a hand-over.
#[derive(Debug)]
pub struct HandoverTcp {
    inner: TcpStream,
    handover: Arc<Handover>,
}

impl HandoverTcp {
    pub fn new(inner: TcpStream, handover: Arc<Handover>) -> HandoverTcp {
        HandoverTcp { inner, handover }
    }

    pub fn peer_addr(&self) -> io::Result<std::net::SocketAddr> {
        self.inner.peer_addr()
    }
}

impl AsyncRead for HandoverTcp {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for HandoverTcp {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let id = self.handover.armed.load(Ordering::SeqCst);
        if id == 0 || buf.is_empty() {
            return Pin::new(&mut self.inner).poll_write(cx, buf);
        }
        let line = super::journal::WorkerJournal::line(id);
        let sock = self.inner.as_raw_fd();
        let journal = self.handover.journal.as_raw_fd();
        loop {
            ready!(self.inner.poll_write_ready(cx))?;
            match self.inner.try_io(Interest::WRITABLE, || {
                send_and_record(sock, buf, journal, line.as_bytes())
            }) {
                Ok((sent, recorded)) => {
                    self.handover.armed.store(0, Ordering::SeqCst);
                    self.handover.recorded.store(recorded, Ordering::SeqCst);
                    return Poll::Ready(Ok(sent));
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// What the child reports back through the shared memory.
#[repr(C)]
struct Job {
    sock: RawFd,
    data: *const u8,
    data_len: usize,
    journal: RawFd,
    line: *const u8,
    line_len: usize,
    /// Bytes sent, or -errno.
    sent: isize,
    /// Bytes of the journal line written, or -errno.
    written: isize,
}

/// The child: only raw system calls, no allocation, no locks, no panics.
#[cfg(target_os = "linux")]
extern "C" fn child(arg: *mut libc::c_void) -> libc::c_int {
    // SAFETY: `arg` is the `Job` the waiting parent thread passed; it outlives this child
    // (the parent is suspended until we exit, and if it dies the memory stays mapped for us).
    let job = unsafe { &mut *(arg as *mut Job) };
    do_job(job);
    0
}

/// The two writes: send, then (if all of it went out) the journal line.
fn do_job(job: &mut Job) {
    job.sent = raw_send(job.sock, job.data, job.data_len);
    job.written = if job.sent > 0 && job.sent as usize == job.data_len {
        raw_write(job.journal, job.line, job.line_len)
    } else {
        0
    };
}

/// No SIGPIPE from a send on a closed connection (Linux's flag; elsewhere Rust's runtime
/// ignores SIGPIPE for the whole process).
#[cfg(target_os = "linux")]
const NO_SIGPIPE: libc::c_int = libc::MSG_NOSIGNAL;
#[cfg(not(target_os = "linux"))]
const NO_SIGPIPE: libc::c_int = 0;

fn raw_send(fd: RawFd, data: *const u8, len: usize) -> isize {
    // SAFETY: `data..data+len` is a live buffer.
    let n = unsafe {
        libc::send(
            fd,
            data as *const libc::c_void,
            len,
            libc::MSG_DONTWAIT | NO_SIGPIPE,
        )
    };
    if n < 0 { -(errno() as isize) } else { n }
}

fn raw_write(fd: RawFd, data: *const u8, len: usize) -> isize {
    // SAFETY: `data..data+len` is a live buffer.
    let n = unsafe { libc::write(fd, data as *const libc::c_void, len) };
    if n < 0 { -(errno() as isize) } else { n }
}

fn errno() -> i32 {
    io::Error::last_os_error()
        .raw_os_error()
        .unwrap_or(libc::EIO)
}

/// Hand-over children started by this process.
static CHILDREN: AtomicU64 = AtomicU64::new(0);

/// How many hand-overs were made by a child (the rest, if any, by the worker itself).
pub fn children_started() -> u64 {
    CHILDREN.load(Ordering::Relaxed)
}

/// Stack for the child: it makes two system calls.
#[cfg(target_os = "linux")]
const CHILD_STACK: usize = 64 * 1024;

/// Sends `data` on `sock` and, if all of it went out, appends `line` to `journal`, both in a
/// child the worker's death cannot interrupt (Linux; elsewhere in the worker). Returns the
/// bytes sent and whether the whole line was written. `WouldBlock` when the socket takes nothing now (nothing is recorded).
pub fn send_and_record(
    sock: RawFd,
    data: &[u8],
    journal: RawFd,
    line: &[u8],
) -> io::Result<(usize, bool)> {
    hand_over(sock, data, journal, line, true)
}

/// The same two writes made by the calling process itself, as when no child can be started
/// (a crash between them can lose or repeat a mail). For comparison in benchmarks.
pub fn send_and_record_in_process(
    sock: RawFd,
    data: &[u8],
    journal: RawFd,
    line: &[u8],
) -> io::Result<(usize, bool)> {
    hand_over(sock, data, journal, line, false)
}

fn hand_over(
    sock: RawFd,
    data: &[u8],
    journal: RawFd,
    line: &[u8],
    in_child: bool,
) -> io::Result<(usize, bool)> {
    let mut job = Job {
        sock,
        data: data.as_ptr(),
        data_len: data.len(),
        journal,
        line: line.as_ptr(),
        line_len: line.len(),
        sent: 0,
        written: 0,
    };
    if !in_child {
        do_job(&mut job);
    } else if !run_in_child(&mut job) {
        static WARN: std::sync::Once = std::sync::Once::new();
        WARN.call_once(|| {
            tracing::warn!(
                error = %io::Error::last_os_error(),
                "cannot start the hand-over child (clone); the final dot and its journal line are written by the worker itself, so a crash between them can lose or repeat a mail"
            )
        });
        do_job(&mut job);
    }
    if job.sent < 0 {
        return Err(io::Error::from_raw_os_error(-job.sent as i32));
    }
    if job.written < 0 {
        tracing::warn!(error = %io::Error::from_raw_os_error(-job.written as i32), "could not write the hand-over journal line; the mail is recorded as sent once the server answers");
    }
    Ok((job.sent as usize, job.written == line.len() as isize))
}

/// Without Linux's `clone` there is no child: the caller makes the writes itself.
#[cfg(not(target_os = "linux"))]
fn run_in_child(_job: &mut Job) -> bool {
    false
}

/// Runs [`child`] on `job` in a `CLONE_VM | CLONE_VFORK` child and waits for it. False when
/// the child could not be created.
#[cfg(target_os = "linux")]
fn run_in_child(job: &mut Job) -> bool {
    // Only the child writes to it (no need to zero it first).
    let mut stack: Vec<u8> = Vec::with_capacity(CHILD_STACK);
    // The stack grows down from its end, 16-byte aligned.
    let top = stack.as_mut_ptr().wrapping_add(CHILD_STACK) as usize & !15;
    // SAFETY: plain libc calls on valid pointers. Signals are blocked around the clone so the
    // child (which copies the mask) never runs one of the worker's handlers on its stack.
    unsafe {
        let mut all: libc::sigset_t = std::mem::zeroed();
        let mut old: libc::sigset_t = std::mem::zeroed();
        libc::sigfillset(&mut all);
        libc::pthread_sigmask(libc::SIG_BLOCK, &all, &mut old);
        let pid = libc::clone(
            child,
            top as *mut libc::c_void,
            libc::CLONE_VM | libc::CLONE_VFORK,
            job as *mut Job as *mut libc::c_void,
        );
        libc::pthread_sigmask(libc::SIG_SETMASK, &old, std::ptr::null_mut());
        if pid <= 0 {
            return false;
        }
        CHILDREN.fetch_add(1, Ordering::Relaxed);
        // No exit signal was asked for: reap it with __WALL.
        let mut status = 0;
        while libc::waitpid(pid, &mut status, libc::__WALL) < 0 {
            if errno() != libc::EINTR {
                break;
            }
        }
    }
    drop(stack);
    true
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;
    use std::io::{Read, Write};

    /// Both ends of a loopback TCP connection: (client, server).
    fn connected_pair() -> (std::net::TcpStream, std::net::TcpStream) {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap_or_else(|e| panic!("{e}"));
        let addr = listener.local_addr().unwrap_or_else(|e| panic!("{e}"));
        let client = std::net::TcpStream::connect(addr).unwrap_or_else(|e| panic!("{e}"));
        let (server, _) = listener.accept().unwrap_or_else(|e| panic!("{e}"));
        (client, server)
    }

    #[test]
    fn the_child_sends_and_records_in_one_step() {
        let (client, mut server) = connected_pair();
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let path = dir.path().join("journal");
        let mut journal = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .unwrap_or_else(|e| panic!("{e}"));
        journal.write_all(b"+1\n").unwrap_or_else(|e| panic!("{e}"));
        let (sent, recorded) = send_and_record(
            client.as_raw_fd(),
            b"\r\n.\r\n",
            journal.as_raw_fd(),
            b"+42\n",
        )
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!((sent, recorded), (5, true));
        assert!(
            children_started() >= 1,
            "the writes were not made by a child"
        );
        let mut got = [0u8; 5];
        server
            .read_exact(&mut got)
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(&got, b"\r\n.\r\n");
        assert_eq!(
            std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{e}")),
            "+1\n+42\n"
        );
    }

    /// The property the child exists for: the worker is killed in the middle of a hand-over
    /// (after the send, before the journal line is written), and the line is written anyway.
    /// The journal here is a pipe kept full, so the journal write waits until the test drains
    /// it, by which time the process that started the hand-over is dead. Made by the worker
    /// itself (no child), the line would die with it.
    #[test]
    fn killing_the_worker_mid_hand_over_does_not_stop_it() {
        let (client, mut server) = connected_pair();
        let mut fds = [0; 2];
        // SAFETY: plain libc calls on descriptors this test owns.
        unsafe {
            assert_eq!(libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC), 0);
            // Fill the pipe, then make its writes block again.
            libc::fcntl(fds[1], libc::F_SETFL, libc::O_NONBLOCK);
            let filler = [b'x'; 4096];
            while libc::write(fds[1], filler.as_ptr() as *const libc::c_void, filler.len()) > 0 {}
            libc::fcntl(fds[1], libc::F_SETFL, 0);
        }
        let (journal_r, journal_w) = (fds[0], fds[1]);
        // SAFETY: the forked "worker" only calls send_and_record and _exit.
        let worker = unsafe { libc::fork() };
        assert!(worker >= 0, "fork failed");
        if worker == 0 {
            let _ = send_and_record(client.as_raw_fd(), b"\r\n.\r\n", journal_w, b"+42\n");
            // SAFETY: leaving the forked process without running the test harness's code.
            unsafe { libc::_exit(0) };
        }
        // The dot arrives: the hand-over has begun; its journal line is waiting for room.
        let mut dot = [0u8; 5];
        server
            .read_exact(&mut dot)
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(&dot, b"\r\n.\r\n");
        // SAFETY: the pid is our own forked child.
        unsafe {
            libc::kill(worker, libc::SIGKILL);
            let mut status = 0;
            libc::waitpid(worker, &mut status, 0);
            assert!(libc::WIFSIGNALED(status), "the worker was not killed");
            libc::close(journal_w);
        }
        // Drain the pipe: the line still comes, from the child that outlived the worker.
        let mut journal =
            unsafe { <std::fs::File as std::os::fd::FromRawFd>::from_raw_fd(journal_r) };
        let mut all = Vec::new();
        journal
            .read_to_end(&mut all)
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(
            all.ends_with(b"+42\n"),
            "the journal line died with the worker (last bytes {:?})",
            String::from_utf8_lossy(&all[all.len().saturating_sub(8)..])
        );
    }

    /// A final write the socket takes only in part is no hand-over: the rest goes out later by
    /// an ordinary write, and the row is marked sent when the server answers.
    #[test]
    fn a_partial_send_records_nothing() {
        let (client, _server) = connected_pair();
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let path = dir.path().join("journal");
        let journal = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .unwrap_or_else(|e| panic!("{e}"));
        // Far more than the socket buffers hold while the server reads nothing.
        let big = vec![b'x'; 64 << 20];
        let (sent, recorded) =
            send_and_record(client.as_raw_fd(), &big, journal.as_raw_fd(), b"+9\n")
                .unwrap_or_else(|e| panic!("{e}"));
        assert!(sent > 0 && sent < big.len(), "sent {sent}");
        assert!(!recorded);
        assert_eq!(
            std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{e}")),
            ""
        );
    }

    #[test]
    fn nothing_is_recorded_when_nothing_could_be_sent() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let path = dir.path().join("journal");
        let journal = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .unwrap_or_else(|e| panic!("{e}"));
        // A connection the peer has closed and reset: the send fails.
        let (client, _server) = connected_pair();
        client
            .shutdown(std::net::Shutdown::Write)
            .unwrap_or_else(|e| panic!("{e}"));
        let r = send_and_record(client.as_raw_fd(), b".\r\n", journal.as_raw_fd(), b"+7\n");
        assert!(r.is_err(), "{r:?}");
        assert_eq!(
            std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{e}")),
            ""
        );
    }
}
