//! A real mail server for integration tests: Dovecot (IMAP with IDLE, IMAPS, LMTP) and Postfix
//! (SMTP, submission with STARTTLS + AUTH, SMTPS), started unprivileged-style in a fresh
//! `/tmp/postdesk-mail.XXXXXX` directory on free loopback ports, stopped on drop.
//!
//! Include it with `#[path = "common/mailstack.rs"] mod mailstack;` (from `tests/`) or
//! `#[path = "../tests/common/mailstack.rs"] mod mailstack;` (from `benches/`). It depends on no
//! other test module.
//!
//! Layout of the directory (see `/work/shared/notes/mail-test-stack.md` for the why):
//! - `ca.pem`: the throwaway test CA; the server certificate (`tls/server.pem`, EC P-256) is for
//!   `localhost` and `127.0.0.1`.
//! - `dovecot/dovecot.conf`, `dovecot/passwd`: Dovecot's config and users. One passwd-file is
//!   looked up by the full address, except for `customer.test` where the key is the domain, so
//!   any local part there logs in with [`PASSWORD`]. The userdb is static (uid `mail`, home
//!   `mail/<domain>/<local part>`, `Maildir` inside). Folders use Dovecot's maildir++ default
//!   hierarchy delimiter "."; Drafts, Junk, Sent and Trash carry SPECIAL-USE flags once created.
//! - `postfix/{main,master}.cf`, `postfix/vmailbox`: Postfix's config. The three test domains
//!   are virtual mailbox domains; `vmailbox` lists the six users plus `@customer.test` (catch-all),
//!   and everything goes to Dovecot over `lmtp:unix:private/dovecot-lmtp`. Mail for any other
//!   domain is refused at RCPT time (nothing ever leaves the machine).
//! - `spool/`: Postfix's queue (the SASL socket is `spool/private/auth`), `mail/`: the maildirs.
//!   Both live in `/dev/shm/postdesk-mail.XXXXXX` (same name; `spool` and `mail` are symlinks)
//!   when /dev/shm is a tmpfs with at least 1 GiB free: on ext4, creating and fsyncing one queue
//!   file per message made Postfix 2-3 times slower. Otherwise they are plain directories.
//! - `log/dovecot.log`, `log/postfix.log` (+ `*.stderr`): see [`MailStack::log`].
//!
//! Ports: `smtp_port` is an MX-like port (no AUTH, STARTTLS offered, mail for the test domains
//! from anyone); `submission_port` requires STARTTLS then AUTH; `smtps_port` is TLS from the first
//! byte and requires AUTH. AUTH is `support@example.test` (or any user) with [`PASSWORD`].
//! Headers are left alone on `smtp_port`; on the authenticated ports Postfix behaves as an MSA
//! (adds a missing Message-ID/Date). A delivered message starts with `Return-Path`,
//! `Delivered-To` and two `Received` headers (Dovecot's LMTP, Postfix's SMTP) above the bytes
//! that were sent; IMAP serves it with CRLF line ends.
//!
//! Timing facts: a failed login (IMAP or SMTP AUTH) takes ~0.5 s (Dovecot 2.3 answers failures
//! on a 500 ms timer even with `auth_failure_delay = 0`; the auth penalty is disabled). Dovecot
//! reports a new message to IDLE ~0.5 s after Postfix's 250. Start/stop/restart are synchronous
//! (std::process and short sleeps, ~0.1-0.6 s): from a current-thread runtime, spawned tasks do
//! not run meanwhile.
//!
//! A stack whose owner process died without dropping it (SIGKILL, timeout) is cleaned up by the
//! next stack started on the machine. Set `POSTDESK_KEEP_MAILSTACK=1` to keep the directory.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::collections::hash_map::RandomState;
use std::ffi::CString;
use std::hash::{BuildHasher, Hasher};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, Once};
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context, Result, anyhow, bail};
use futures::TryStreamExt;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

/// The password of every test user (IMAP and SMTP AUTH).
pub const PASSWORD: &str = "postdesk-test-password";
/// The OAuth 2.0 bearer token every user may also log in with over XOAUTH2 (Dovecot 2.3 checks
/// an XOAUTH2 token against the passdb as if it were a password; a second passwd-file holds it).
pub const OAUTH_TOKEN: &str = "ya29.postdesk-test-token";

pub const SUPPORT: &str = "support@example.test";
pub const ENGINEER: &str = "engineer@example.test";
pub const TRIAGE: &str = "triage@example.test";
pub const ALICE: &str = "alice@customer.test";
pub const BOB: &str = "bob@customer.test";
pub const CAROL: &str = "carol@other.test";
/// The account manager of customer.test.
pub const MANAGER: &str = "manager@example.test";
/// An address Postfix accepts (it is in `vmailbox`) but Dovecot does not know: LMTP refuses it
/// with 550 5.1.1 after Postfix queued the mail, so Postfix returns a real bounce (RFC 3464) to
/// the envelope sender.
pub const GONE: &str = "gone@other.test";
/// The users listed one by one (every local part of `customer.test` exists as well).
/// A subject containing this is refused by Postfix after the final dot of DATA (header_checks
/// run when the whole message is in), the way content filters refuse mail.
pub const REJECT_AFTER_DOT: &str = "postdesk-test-reject-after-dot";

pub const USERS: [&str; 7] = [SUPPORT, ENGINEER, TRIAGE, ALICE, BOB, CAROL, MANAGER];
/// The domains Postfix accepts mail for.
pub const DOMAINS: [&str; 3] = ["example.test", "customer.test", "other.test"];
/// The domain in which every local part is a mailbox.
pub const CATCH_ALL_DOMAIN: &str = "customer.test";

/// `customer{n}@customer.test`: a mailbox that exists for any `n`.
pub fn customer(n: usize) -> String {
    format!("customer{n}@{CATCH_ALL_DOMAIN}")
}

const DOVECOT: &str = "/usr/sbin/dovecot";
const POSTFIX_MASTER: &str = "/usr/lib/postfix/sbin/master";
const DIR_PREFIX: &str = "postdesk-mail.";

/// What Dovecot 2.3 (Debian 12: 2.3.19.1) advertises after login with this configuration. Used
/// only when IDLE or MOVE must be hidden: `imap_capability` replaces the whole list.
const DOVECOT_CAPABILITIES: &[&str] = &[
    "IMAP4rev1",
    "SASL-IR",
    "LOGIN-REFERRALS",
    "ID",
    "ENABLE",
    "IDLE",
    "SORT",
    "SORT=DISPLAY",
    "THREAD=REFERENCES",
    "THREAD=REFS",
    "THREAD=ORDEREDSUBJECT",
    "MULTIAPPEND",
    "URL-PARTIAL",
    "CATENATE",
    "UNSELECT",
    "CHILDREN",
    "NAMESPACE",
    "UIDPLUS",
    "LIST-EXTENDED",
    "I18NLEVEL=1",
    "CONDSTORE",
    "QRESYNC",
    "ESEARCH",
    "ESORT",
    "SEARCHRES",
    "WITHIN",
    "CONTEXT=SEARCH",
    "LIST-STATUS",
    "BINARY",
    "MOVE",
    "SNIPPET=FUZZY",
    "PREVIEW=FUZZY",
    "PREVIEW",
    "STATUS=SIZE",
    "SAVEDATE",
    "LITERAL+",
    "NOTIFY",
    "SPECIAL-USE",
];

#[derive(Clone, Copy, Debug)]
pub struct StackOptions {
    /// Advertise IDLE (default true).
    pub idle: bool,
    /// Advertise MOVE (default true).
    pub moves: bool,
}

impl Default for StackOptions {
    fn default() -> Self {
        StackOptions {
            idle: true,
            moves: true,
        }
    }
}

pub type ImapSession = async_imap::Session<TcpStream>;

pub struct MailStack {
    pub dir: PathBuf,
    pub imap_port: u16,
    pub imaps_port: u16,
    pub smtp_port: u16,
    pub submission_port: u16,
    pub smtps_port: u16,
    pub ca_file: PathBuf,
    pub options: StackOptions,
    /// The directory's random suffix; it appears in both greetings.
    id: String,
    /// Where `spool/` and `mail/` really are: `/dev/shm/<name>` or `dir`.
    store: PathBuf,
    mail_uid: u32,
    mail_gid: u32,
    dovecot: Mutex<Option<Child>>,
    postfix: Mutex<Option<Child>>,
}

/// Ports held by the stacks of this process, so that a stopped daemon's port is not handed to
/// another stack before it restarts.
static PORTS_IN_USE: Mutex<Vec<u16>> = Mutex::new(Vec::new());

impl MailStack {
    /// Starts Dovecot and Postfix with the default options. Panics with the daemons' logs on
    /// failure.
    pub fn start() -> MailStack {
        MailStack::start_with(StackOptions::default())
    }

    pub fn start_with(options: StackOptions) -> MailStack {
        // SAFETY: geteuid(2) has no preconditions.
        let euid = unsafe { libc::geteuid() };
        assert_eq!(
            euid, 0,
            "mailstack: needs root (Postfix's master runs as root and mail belongs to 'mail')"
        );
        static REAP: Once = Once::new();
        REAP.call_once(reap_orphans);
        for (path, what) in [
            (DOVECOT, "dovecot-imapd"),
            ("/usr/lib/dovecot/lmtp", "dovecot-lmtpd"),
            (POSTFIX_MASTER, "postfix"),
        ] {
            assert!(
                Path::new(path).exists(),
                "mailstack: {path} is missing: install {what} (scripts/test.sh does)"
            );
        }
        let (mail_uid, mail_gid) = user_ids("mail").unwrap_or((8, 8));
        let dir = make_dir();
        let id = dir
            .file_name()
            .unwrap()
            .to_string_lossy()
            .trim_start_matches(DIR_PREFIX)
            .to_string();
        let store = make_store(&dir);
        let mut stack = MailStack {
            ca_file: dir.join("ca.pem"),
            dir,
            store,
            imap_port: 0,
            imaps_port: 0,
            smtp_port: 0,
            submission_port: 0,
            smtps_port: 0,
            options,
            id,
            mail_uid,
            mail_gid,
            dovecot: Mutex::new(None),
            postfix: Mutex::new(None),
        };
        // From here on, Drop stops whatever runs and removes the directory.
        if let Err(e) = stack.prepare() {
            panic!("mailstack: preparing {}: {e:#}", stack.dir.display());
        }
        let mut errors = Vec::new();
        for _attempt in 0..4 {
            let ports = pick_ports(5);
            [
                stack.imap_port,
                stack.imaps_port,
                stack.smtp_port,
                stack.submission_port,
                stack.smtps_port,
            ] = [ports[0], ports[1], ports[2], ports[3], ports[4]];
            let result = stack.write_configs().and_then(|()| stack.start_all());
            match result {
                Ok(()) => return stack,
                Err(e) => {
                    // Most likely a port taken between the bind test and the daemon's bind:
                    // try again elsewhere.
                    errors.push(format!("{e:#}"));
                    stack.stop_postfix();
                    stack.stop_dovecot();
                    stack.release_ports();
                }
            }
        }
        panic!(
            "mailstack: could not start the mail stack in {}: {}\n{}",
            stack.dir.display(),
            errors.join("; "),
            stack.log()
        );
    }

    fn ports(&self) -> [u16; 5] {
        [
            self.imap_port,
            self.imaps_port,
            self.smtp_port,
            self.submission_port,
            self.smtps_port,
        ]
    }

    fn release_ports(&self) {
        let mine = self.ports();
        PORTS_IN_USE
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|p| !mine.contains(p));
    }

    /// Directories, users, TLS material: everything that does not depend on the ports.
    fn prepare(&self) -> Result<()> {
        let d = &self.dir;
        let (pf_uid, pf_gid) =
            user_ids("postfix").context("no 'postfix' user: is postfix installed?")?;
        let postdrop = group_id("postdrop").context("no 'postdrop' group")?;
        for sub in ["tls", "log", "dovecot", "postfix"] {
            mkdir(&d.join(sub), 0o755, None)?;
        }
        mkdir(&d.join("postfix-data"), 0o700, Some((pf_uid, pf_gid)))?;
        let spool = self.store.join("spool");
        mkdir(&spool, 0o755, None)?;
        let mail = self.store.join("mail");
        mkdir(&mail, 0o755, Some((self.mail_uid, self.mail_gid)))?;
        if self.store != *d {
            std::os::unix::fs::symlink(&spool, d.join("spool"))?;
            std::os::unix::fs::symlink(&mail, d.join("mail"))?;
        }
        // What `postfix check` would create.
        for q in [
            "active", "bounce", "corrupt", "defer", "deferred", "flush", "hold", "incoming",
            "private", "saved", "trace",
        ] {
            mkdir(&spool.join(q), 0o700, Some((pf_uid, 0)))?;
        }
        mkdir(&spool.join("maildrop"), 0o730, Some((pf_uid, postdrop)))?;
        mkdir(&spool.join("public"), 0o710, Some((pf_uid, postdrop)))?;
        mkdir(&spool.join("pid"), 0o755, Some((0, 0)))?;

        self.make_tls()?;

        let mut passwd = String::new();
        for user in USERS {
            passwd.push_str(&format!("{user}:{{PLAIN}}{PASSWORD}\n"));
        }
        // Looked up by domain for customer.test (see username_format in dovecot.conf).
        passwd.push_str(&format!("{CATCH_ALL_DOMAIN}:{{PLAIN}}{PASSWORD}\n"));
        write_file(&d.join("dovecot/passwd"), &passwd, 0o644)?;
        write_file(
            &d.join("dovecot/tokens"),
            &passwd.replace(PASSWORD, OAUTH_TOKEN),
            0o644,
        )?;

        let mut vmailbox = String::new();
        for user in USERS {
            vmailbox.push_str(&format!("{user} ok\n"));
        }
        vmailbox.push_str(&format!("@{CATCH_ALL_DOMAIN} ok\n"));
        vmailbox.push_str(&format!("{GONE} ok\n"));
        write_file(&d.join("postfix/vmailbox"), &vmailbox, 0o644)?;
        write_file(
            &d.join("postfix/header_checks"),
            &format!("/^Subject:.*{REJECT_AFTER_DOT}/ REJECT 5.7.1 refused after the final dot\n"),
            0o644,
        )?;
        Ok(())
    }

    fn make_tls(&self) -> Result<()> {
        let tls = self.dir.join("tls");
        let cnf = tls.join("openssl.cnf");
        write_file(
            &cnf,
            "[ req ]\n\
             distinguished_name = dn\n\
             [ dn ]\n\
             [ ca_ext ]\n\
             basicConstraints = critical,CA:TRUE\n\
             keyUsage = critical,keyCertSign,cRLSign\n\
             subjectKeyIdentifier = hash\n\
             [ server_ext ]\n\
             basicConstraints = critical,CA:FALSE\n\
             keyUsage = critical,digitalSignature\n\
             extendedKeyUsage = serverAuth\n\
             subjectAltName = DNS:localhost,IP:127.0.0.1\n\
             subjectKeyIdentifier = hash\n\
             authorityKeyIdentifier = keyid\n",
            0o644,
        )?;
        let ec = [
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
        ];
        let ca_key = tls.join("ca.key");
        run(Command::new("openssl")
            .env("OPENSSL_CONF", &cnf)
            .arg("req")
            .arg("-config")
            .arg(&cnf)
            .arg("-x509")
            .args(ec)
            .arg("-keyout")
            .arg(&ca_key)
            .arg("-out")
            .arg(&self.ca_file)
            .args(["-subj", "/CN=postdesk test CA", "-days", "7"])
            .args(["-extensions", "ca_ext"]))?;
        run(Command::new("openssl")
            .env("OPENSSL_CONF", &cnf)
            .arg("req")
            .arg("-config")
            .arg(&cnf)
            .arg("-x509")
            .args(ec)
            .arg("-keyout")
            .arg(tls.join("server.key"))
            .arg("-out")
            .arg(tls.join("server.pem"))
            .args(["-subj", "/CN=localhost", "-days", "7"])
            .arg("-CA")
            .arg(&self.ca_file)
            .arg("-CAkey")
            .arg(&ca_key)
            .args(["-extensions", "server_ext"]))?;
        std::fs::set_permissions(&self.ca_file, std::fs::Permissions::from_mode(0o644))?;
        Ok(())
    }

    fn write_configs(&self) -> Result<()> {
        let d = &self.dir;
        write_file(&d.join("dovecot/dovecot.conf"), &self.dovecot_conf(), 0o644)?;
        write_file(&d.join("postfix/main.cf"), &self.postfix_main_cf(), 0o644)?;
        write_file(
            &d.join("postfix/master.cf"),
            &self.postfix_master_cf(),
            0o644,
        )?;
        // Postfix waits ~1.5 s for the clock to pass a config file's mtime if it is "now".
        for f in [
            "dovecot/dovecot.conf",
            "dovecot/passwd",
            "dovecot/tokens",
            "postfix/main.cf",
            "postfix/master.cf",
            "postfix/vmailbox",
            "postfix/header_checks",
            "tls/server.pem",
            "tls/server.key",
            "ca.pem",
        ] {
            backdate(&d.join(f))?;
        }
        Ok(())
    }

    fn dovecot_conf(&self) -> String {
        let capability = if self.options.idle && self.options.moves {
            String::new()
        } else {
            let caps: Vec<&str> = DOVECOT_CAPABILITIES
                .iter()
                .copied()
                .filter(|c| {
                    (self.options.idle || *c != "IDLE") && (self.options.moves || *c != "MOVE")
                })
                .collect();
            format!("imap_capability = {}\n", caps.join(" "))
        };
        let t = r#"# postdesk test stack @ID@: generated by tests/common/mailstack.rs
instance_name = postdesk-@ID@
base_dir = @DIR@/dovecot/run
state_dir = @DIR@/dovecot/state
log_path = @DIR@/log/dovecot.log
protocols = imap lmtp
listen = 127.0.0.1
hostname = mail.example.test
login_greeting = postdesk-@ID@ ready.
ssl = yes
ssl_cert = <@DIR@/tls/server.pem
ssl_key = <@DIR@/tls/server.key
disable_plaintext_auth = no
auth_mechanisms = plain login xoauth2
# Failed logins still take ~0.5 s: Dovecot 2.3 flushes failures on a 500 ms timer.
auth_failure_delay = 0
first_valid_uid = @UID@
mail_location = maildir:~/Maildir
mail_fsync = never
mailbox_idle_check_interval = 1 secs
imap_max_line_length = 10M
mail_max_userip_connections = 10000
postmaster_address = postmaster@example.test
default_process_limit = 500
default_client_limit = 5000
@CAPABILITY@
namespace inbox {
  inbox = yes
  mailbox Drafts {
    special_use = \Drafts
  }
  mailbox Junk {
    special_use = \Junk
  }
  mailbox Trash {
    special_use = \Trash
  }
  mailbox Sent {
    special_use = \Sent
  }
}
# Full address as the key, except customer.test where every local part exists.
passdb {
  driver = passwd-file
  args = scheme=PLAIN username_format=%{if;%Ld;eq;customer.test;%Ld;%Lu} @DIR@/dovecot/passwd
}
# Bearer tokens (XOAUTH2 hands the token to the passdbs as the password).
passdb {
  driver = passwd-file
  args = scheme=PLAIN username_format=%{if;%Ld;eq;customer.test;%Ld;%Lu} @DIR@/dovecot/tokens
}
userdb {
  driver = static
  args = uid=@UID@ gid=@GID@ home=@MAIL@/%Ld/%Ln
}
# No authentication penalty (auth runs as the dovecot user, which cannot open this socket).
service anvil {
  unix_listener anvil-auth-penalty {
    mode = 0
  }
}
service imap-login {
  inet_listener imap {
    address = 127.0.0.1
    port = @IMAP@
  }
  inet_listener imaps {
    address = 127.0.0.1
    port = @IMAPS@
    ssl = yes
  }
}
service lmtp {
  unix_listener @SPOOL@/private/dovecot-lmtp {
    mode = 0600
    user = postfix
    group = postfix
  }
}
service auth {
  unix_listener @SPOOL@/private/auth {
    mode = 0660
    user = postfix
    group = postfix
  }
}
"#;
        self.fill(t).replace("@CAPABILITY@\n", &capability)
    }

    fn postfix_main_cf(&self) -> String {
        let t = r#"# postdesk test stack @ID@: generated by tests/common/mailstack.rs
compatibility_level = 3.6
config_directory = @DIR@/postfix
meta_directory = @DIR@/postfix
queue_directory = @SPOOL@
data_directory = @DIR@/postfix-data
command_directory = /usr/sbin
daemon_directory = /usr/lib/postfix/sbin
shlib_directory = /usr/lib/postfix
mail_owner = postfix
setgid_group = postdrop
maillog_file = @DIR@/log/postfix.log
maillog_file_prefixes = @DIR@
syslog_name = postfix-@ID@
myhostname = mail.example.test
mydomain = example.test
myorigin = example.test
mydestination =
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
mynetworks = 127.0.0.0/8
alias_maps =
alias_database =
local_recipient_maps =
relay_domains =
recipient_delimiter = +
smtpd_banner = $myhostname ESMTP postdesk-@ID@
virtual_mailbox_domains = example.test, customer.test, other.test
virtual_mailbox_maps = texthash:@DIR@/postfix/vmailbox
virtual_transport = lmtp:unix:private/dovecot-lmtp
default_transport = error:5.7.1 the postdesk test stack delivers only to its test domains
relay_transport = error:5.7.1 the postdesk test stack delivers only to its test domains
smtpd_relay_restrictions = reject_unauth_destination
smtpd_recipient_restrictions =
header_checks = regexp:@DIR@/postfix/header_checks
local_header_rewrite_clients =
disable_mime_output_conversion = yes
smtpd_peername_lookup = no
smtp_dns_support_level = disabled
smtpd_error_sleep_time = 0
smtpd_soft_error_limit = 1000
smtpd_hard_error_limit = 1000
smtpd_junk_command_limit = 100000
smtpd_client_connection_count_limit = 0
default_process_limit = 200
in_flow_delay = 0
# Daemons serve many requests instead of being respawned after 100 (measurable in bulk sends).
max_use = 10000
# 20 (the default) concurrent deliveries into one maildir on 2 cores only contend for its locks.
lmtp_destination_concurrency_limit = 4
queue_run_delay = 1s
minimal_backoff_time = 1s
maximal_backoff_time = 2s
message_size_limit = 104857600
mailbox_size_limit = 0
virtual_mailbox_limit = 0
biff = no
smtpd_tls_chain_files = @DIR@/tls/server.key, @DIR@/tls/server.pem
smtpd_tls_security_level = may
smtpd_sasl_type = dovecot
smtpd_sasl_path = private/auth
smtpd_sasl_auth_enable = no
"#;
        self.fill(t)
    }

    fn postfix_master_cf(&self) -> String {
        let t = r#"# postdesk test stack @ID@: generated by tests/common/mailstack.rs
127.0.0.1:@SMTP@ inet n - n - - smtpd
127.0.0.1:@SUBMISSION@ inet n - n - - smtpd
  -o syslog_name=postfix-@ID@/submission
  -o smtpd_tls_security_level=encrypt
  -o smtpd_tls_auth_only=yes
  -o smtpd_sasl_auth_enable=yes
  -o smtpd_client_restrictions=permit_sasl_authenticated,reject
  -o local_header_rewrite_clients=permit_sasl_authenticated
127.0.0.1:@SMTPS@ inet n - n - - smtpd
  -o syslog_name=postfix-@ID@/smtps
  -o smtpd_tls_wrappermode=yes
  -o smtpd_sasl_auth_enable=yes
  -o smtpd_client_restrictions=permit_sasl_authenticated,reject
  -o local_header_rewrite_clients=permit_sasl_authenticated
pickup     unix  n - n 60    1 pickup
cleanup    unix  n - n -     0 cleanup
qmgr       unix  n - n 300   1 qmgr
tlsmgr     unix  - - n 1000? 1 tlsmgr
rewrite    unix  - - n -     - trivial-rewrite
bounce     unix  - - n -     0 bounce
defer      unix  - - n -     0 bounce
trace      unix  - - n -     0 bounce
verify     unix  - - n -     1 verify
flush      unix  n - n 1000? 0 flush
proxymap   unix  - - n -     - proxymap
proxywrite unix  - - n -     1 proxymap
smtp       unix  - - n -     - smtp
relay      unix  - - n -     - smtp
showq      unix  n - n -     - showq
error      unix  - - n -     - error
retry      unix  - - n -     - error
discard    unix  - - n -     - discard
lmtp       unix  - - n -     - lmtp
anvil      unix  - - n -     1 anvil
scache     unix  - - n -     1 scache
postlog    unix-dgram n - n - 1 postlogd
"#;
        self.fill(t)
    }

    fn fill(&self, template: &str) -> String {
        template
            .replace("@SPOOL@", &self.store.join("spool").to_string_lossy())
            .replace("@MAIL@", &self.store.join("mail").to_string_lossy())
            .replace("@DIR@", &self.dir.to_string_lossy())
            .replace("@ID@", &self.id)
            .replace("@UID@", &self.mail_uid.to_string())
            .replace("@GID@", &self.mail_gid.to_string())
            .replace("@IMAP@", &self.imap_port.to_string())
            .replace("@IMAPS@", &self.imaps_port.to_string())
            .replace("@SMTP@", &self.smtp_port.to_string())
            .replace("@SUBMISSION@", &self.submission_port.to_string())
            .replace("@SMTPS@", &self.smtps_port.to_string())
    }

    fn start_all(&self) -> Result<()> {
        self.spawn_dovecot()?;
        self.spawn_postfix()?;
        let deadline = Instant::now() + Duration::from_secs(20);
        self.wait_dovecot(deadline)?;
        self.wait_postfix(deadline)?;
        Ok(())
    }

    fn spawn_dovecot(&self) -> Result<()> {
        let mut slot = self.dovecot.lock().unwrap_or_else(|e| e.into_inner());
        if slot.is_some() {
            return Ok(());
        }
        // A stale pid file whose pid was reused would make Dovecot think it already runs.
        let _ = std::fs::remove_file(self.dir.join("dovecot/run/master.pid"));
        let conf = self.dir.join("dovecot/dovecot.conf");
        let child = spawn_daemon(
            Command::new(DOVECOT).arg("-F").arg("-c").arg(&conf),
            &self.dir.join("log/dovecot.stderr"),
        )
        .context("spawning dovecot")?;
        std::fs::write(self.dir.join("dovecot.pid"), child.id().to_string())?;
        *slot = Some(child);
        Ok(())
    }

    fn spawn_postfix(&self) -> Result<()> {
        let mut slot = self.postfix.lock().unwrap_or_else(|e| e.into_inner());
        if slot.is_some() {
            return Ok(());
        }
        // `master -d` (foreground) rather than `postfix start`, which reads /etc/postfix and
        // spends seconds in `postfix check`.
        let child = spawn_daemon(
            Command::new(POSTFIX_MASTER)
                .arg("-c")
                .arg(self.dir.join("postfix"))
                .arg("-d"),
            &self.dir.join("log/postfix.stderr"),
        )
        .context("spawning postfix master")?;
        std::fs::write(self.dir.join("postfix.pid"), child.id().to_string())?;
        *slot = Some(child);
        Ok(())
    }

    fn check_alive(slot: &Mutex<Option<Child>>, name: &str) -> Result<()> {
        let mut slot = slot.lock().unwrap_or_else(|e| e.into_inner());
        match slot.as_mut() {
            None => bail!("{name} is not running"),
            Some(child) => match child.try_wait()? {
                Some(status) => {
                    *slot = None;
                    bail!("{name} exited at start with {status}")
                }
                None => Ok(()),
            },
        }
    }

    fn wait_dovecot(&self, deadline: Instant) -> Result<()> {
        let mark = format!("postdesk-{}", self.id);
        loop {
            Self::check_alive(&self.dovecot, "dovecot")?;
            // The master binds every listener before it starts any service: a greeting on the
            // plain port means IMAPS and LMTP are there too.
            if greeting(self.imap_port, "* OK", &mark, b"a LOGOUT\r\n") {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("dovecot did not accept IMAP connections in time");
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    fn wait_postfix(&self, deadline: Instant) -> Result<()> {
        let mark = format!("postdesk-{}", self.id);
        loop {
            Self::check_alive(&self.postfix, "postfix")?;
            // As for Dovecot: once one port greets, all are bound (smtps is not probed, as a
            // bare TCP connection would log a TLS error).
            if greeting(self.smtp_port, "220 ", &mark, b"QUIT\r\n")
                && greeting(self.submission_port, "220 ", &mark, b"QUIT\r\n")
            {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("postfix did not accept SMTP connections in time");
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    fn fail(&self, what: &str, e: anyhow::Error) -> ! {
        panic!("mailstack: {what}: {e:#}\n{}", self.log())
    }

    /// Stops Postfix (SIGTERM to its process group; returns when every process of it is gone).
    pub fn stop_postfix(&self) {
        stop_daemon(&self.postfix);
    }

    /// Starts Postfix again on the same ports; returns when it accepts SMTP connections.
    pub fn start_postfix(&self) {
        let r = self
            .spawn_postfix()
            .and_then(|()| self.wait_postfix(Instant::now() + Duration::from_secs(20)));
        if let Err(e) = r {
            self.fail("starting postfix", e);
        }
    }

    pub fn stop_dovecot(&self) {
        stop_daemon(&self.dovecot);
    }

    /// Starts Dovecot again on the same ports; returns when it accepts IMAP connections. Mail
    /// that Postfix deferred meanwhile is retried at once.
    pub fn start_dovecot(&self) {
        let r = self
            .spawn_dovecot()
            .and_then(|()| self.wait_dovecot(Instant::now() + Duration::from_secs(20)));
        if let Err(e) = r {
            self.fail("starting dovecot", e);
        }
        self.flush_postfix_queue();
    }

    pub fn restart_dovecot(&self) {
        self.stop_dovecot();
        self.start_dovecot();
    }

    /// Asks Postfix's queue manager to retry deferred mail now (what `postqueue -f` does).
    fn flush_postfix_queue(&self) {
        let running = self
            .postfix
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_some();
        if !running {
            return;
        }
        let qmgr = self.store.join("spool/public/qmgr");
        if let Ok(mut s) = std::os::unix::net::UnixStream::connect(qmgr) {
            // flush dead destinations, ignore retry times, scan deferred, scan incoming
            let _ = s.write_all(b"FADI\0");
        }
    }

    /// The files in Postfix's queue: messages accepted (250 given) and not yet delivered to
    /// Dovecot or bounced. Postfix removes a message's file only after LMTP said 250 for it, so
    /// an empty queue means nothing is in flight. The scan order follows the ways a file moves
    /// (maildrop -> incoming -> active <-> deferred, hold) and reads `active` again last, so a
    /// file renamed between two reads is still seen once.
    pub fn queued(&self) -> Vec<PathBuf> {
        let spool = self.store.join("spool");
        let mut files = Vec::new();
        for q in [
            "maildrop", "incoming", "active", "deferred", "hold", "incoming", "active",
        ] {
            collect_files(&spool.join(q), &mut files);
        }
        files.sort();
        files.dedup();
        files
    }

    /// Waits until Postfix's queue is empty (see [`MailStack::queued`]): every message it
    /// accepted has reached Dovecot or was bounced, and no redelivery is pending. What the
    /// mailboxes hold then is final until someone sends again. Polls the spool directories
    /// (blocking, like start and stop); panics with the queue and the logs after `timeout`.
    pub fn wait_for_empty_queue(&self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            let left = self.queued();
            if left.is_empty() {
                return;
            }
            if Instant::now() > deadline {
                self.fail(
                    "waiting for Postfix's queue to empty",
                    anyhow!("{} message(s) still queued: {left:?}", left.len()),
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The maildir of a user: `<dir>/mail/<domain>/<local part>/Maildir`.
    pub fn maildir(&self, user: &str) -> PathBuf {
        let user = user.to_lowercase();
        let (local, domain) = user.split_once('@').unwrap_or((&user, ""));
        self.store
            .join("mail")
            .join(domain)
            .join(local)
            .join("Maildir")
    }

    /// Makes the INBOX's UIDVALIDITY change while keeping its message files: waits until
    /// Postfix has nothing in flight, stops Dovecot, removes the INBOX's uidlist and index files
    /// (keeping `dovecot-uidvalidity`, so the next value is higher), starts Dovecot.
    ///
    /// The wait is there because stopping Dovecot in the middle of an LMTP delivery makes
    /// Postfix deliver that message again (it never read the 250): a test of UIDVALIDITY must not
    /// see a transport duplicate among the mail it counts.
    pub fn recreate_inbox_with_same_messages(&self, user: &str) {
        let maildir = self.maildir(user);
        self.wait_for_empty_queue(Duration::from_secs(30));
        self.stop_dovecot();
        if let Ok(rd) = std::fs::read_dir(&maildir) {
            for entry in rd.flatten() {
                let name = entry.file_name().to_string_lossy().to_string();
                if name.starts_with("dovecot-uidlist")
                    || name.starts_with("dovecot.index")
                    || name.starts_with("dovecot.list.index")
                {
                    let _ = std::fs::remove_file(entry.path());
                }
            }
        }
        self.start_dovecot();
    }

    pub fn imap_url(&self, user: &str) -> String {
        format!(
            "imap://{}@127.0.0.1:{}/INBOX",
            percent_encode(user),
            self.imap_port
        )
    }

    pub fn imaps_url(&self, user: &str) -> String {
        format!(
            "imaps://{}@127.0.0.1:{}/INBOX",
            percent_encode(user),
            self.imaps_port
        )
    }

    /// Submission with STARTTLS and AUTH as support@example.test.
    pub fn submission_url(&self) -> String {
        format!(
            "smtp://{}@127.0.0.1:{}",
            percent_encode(SUPPORT),
            self.submission_port
        )
    }

    pub fn smtps_url(&self) -> String {
        format!(
            "smtps://{}@127.0.0.1:{}",
            percent_encode(SUPPORT),
            self.smtps_port
        )
    }

    pub fn plain_smtp_url(&self) -> String {
        format!("smtp://127.0.0.1:{}", self.smtp_port)
    }

    /// Both daemons' logs (and anything they printed on stderr), for assertion messages.
    pub fn log(&self) -> String {
        let mut out = String::new();
        for f in [
            "log/postfix.stderr",
            "log/postfix.log",
            "log/dovecot.stderr",
            "log/dovecot.log",
        ] {
            let path = self.dir.join(f);
            if let Ok(bytes) = std::fs::read(&path)
                && !bytes.is_empty()
            {
                out.push_str(&format!("===== {} =====\n", path.display()));
                out.push_str(&String::from_utf8_lossy(&bytes));
                if !out.ends_with('\n') {
                    out.push('\n');
                }
            }
        }
        out
    }

    // ----- SMTP -----

    /// Sends one message over plain SMTP to `smtp_port` (pipelined MAIL/RCPT/DATA); returns the
    /// instant Postfix's 250 for the end of DATA arrived. Bare LF line ends are sent as CRLF.
    /// Panics on failure.
    pub async fn send(&self, from: &str, to: &str, raw: &[u8]) -> Instant {
        match self.try_send(from, to, raw).await {
            Ok(t) => t,
            Err(e) => self.fail(&format!("sending from {from} to {to}"), e),
        }
    }

    /// [`MailStack::send`] returning the error (connection refused, 5xx reply...).
    pub async fn try_send(&self, from: &str, to: &str, raw: &[u8]) -> Result<Instant> {
        let mut c = Smtp::connect(self.smtp_port).await?;
        c.write(&envelope(from, to, raw)).await?;
        c.envelope_replies().await?;
        c.write(&dot_stuff(raw)).await?;
        c.expect(250, "end of DATA").await?;
        let t = Instant::now();
        let _ = c.write(b"QUIT\r\n").await;
        Ok(t)
    }

    /// Sends many messages fast: a few connections, each pipelining one transaction after the
    /// other (one round trip per message). Returns when Postfix has accepted all of them (they
    /// are delivered to Dovecot shortly after; see [`MailStack::wait_for_count`]). Tuples are
    /// (from, to, raw message). Panics on failure.
    pub async fn send_many(&self, mails: Vec<(String, String, Vec<u8>)>) {
        if mails.is_empty() {
            return;
        }
        let conns = mails.len().div_ceil(250).clamp(1, 4);
        let per = mails.len().div_ceil(conns);
        let mut chunks = Vec::new();
        let mut it = mails.into_iter();
        loop {
            let chunk: Vec<_> = it.by_ref().take(per).collect();
            if chunk.is_empty() {
                break;
            }
            chunks.push(chunk);
        }
        let jobs = chunks.iter().map(|c| self.send_batch(c));
        if let Err(e) = futures::future::try_join_all(jobs).await {
            self.fail("send_many", e);
        }
    }

    async fn send_batch(&self, mails: &[(String, String, Vec<u8>)]) -> Result<()> {
        let mut c = Smtp::connect(self.smtp_port).await?;
        c.write(&envelope(&mails[0].0, &mails[0].1, &mails[0].2))
            .await?;
        for (i, (from, to, raw)) in mails.iter().enumerate() {
            c.envelope_replies()
                .await
                .with_context(|| format!("message {i} from {from} to {to}"))?;
            let mut out = dot_stuff(raw);
            if let Some((f, t, r)) = mails.get(i + 1) {
                out.extend_from_slice(&envelope(f, t, r));
            }
            c.write(&out).await?;
            c.expect(250, "end of DATA")
                .await
                .with_context(|| format!("message {i} from {from} to {to}"))?;
        }
        let _ = c.write(b"QUIT\r\n").await;
        Ok(())
    }

    // ----- IMAP (plain port, LOGIN) -----

    /// Logs in over IMAP (plain port) as `user` with [`PASSWORD`], retrying connection errors
    /// for a few seconds (e.g. right after a restart).
    pub async fn imap_session(&self, user: &str) -> Result<ImapSession> {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            match self.try_imap_session(user).await {
                Ok(s) => return Ok(s),
                Err(e) => {
                    let text = format!("{e:#}");
                    if text.contains("AUTHENTICATIONFAILED") || Instant::now() > deadline {
                        return Err(e);
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
    }

    async fn try_imap_session(&self, user: &str) -> Result<ImapSession> {
        let tcp = TcpStream::connect(("127.0.0.1", self.imap_port)).await?;
        tcp.set_nodelay(true)?;
        let mut client = async_imap::Client::new(tcp);
        client
            .read_response()
            .await?
            .ok_or_else(|| anyhow!("no IMAP greeting"))?;
        client
            .login(user, PASSWORD)
            .await
            .map_err(|(e, _)| anyhow!("IMAP LOGIN as {user}: {e}"))
    }

    async fn session_or_panic(&self, user: &str) -> ImapSession {
        match self.imap_session(user).await {
            Ok(s) => s,
            Err(e) => self.fail(&format!("IMAP login as {user}"), e),
        }
    }

    /// IMAP APPENDs the messages in order (UIDs follow the slice), creating the folder if
    /// missing. Uses MULTIAPPEND with non-synchronizing literals, 500 messages per command, so a
    /// backlog of thousands takes a second or two.
    pub async fn append(&self, user: &str, folder: &str, raws: &[Vec<u8>]) {
        if let Err(e) = self.try_append(user, folder, raws).await {
            self.fail(&format!("appending to {user} {folder}"), e);
        }
    }

    async fn try_append(&self, user: &str, folder: &str, raws: &[Vec<u8>]) -> Result<()> {
        let mut c = RawImap::login(self.imap_port, user).await?;
        // NO if it exists already: fine.
        c.command(format!("CREATE {}", imap_quote(folder)).as_bytes())
            .await?;
        for chunk in raws.chunks(500) {
            let mut cmd = format!("APPEND {}", imap_quote(folder)).into_bytes();
            for raw in chunk {
                cmd.extend_from_slice(format!(" {{{}+}}\r\n", raw.len()).as_bytes());
                cmd.extend_from_slice(raw);
            }
            let (ok, line) = c.command(&cmd).await?;
            if !ok {
                bail!("APPEND to {folder}: {line}");
            }
        }
        let _ = c.command(b"LOGOUT").await;
        Ok(())
    }

    /// Every message of the folder, full bytes (BODY.PEEK[]), in UID order; empty if the folder
    /// does not exist.
    pub async fn fetch_all(&self, user: &str, folder: &str) -> Vec<Vec<u8>> {
        let mut s = self.session_or_panic(user).await;
        let r: Result<Vec<Vec<u8>>> = async {
            let mailbox = match s.examine(folder).await {
                Ok(m) => m,
                Err(async_imap::error::Error::No(_)) => return Ok(Vec::new()),
                Err(e) => return Err(e.into()),
            };
            if mailbox.exists == 0 {
                return Ok(Vec::new());
            }
            let fetches: Vec<_> = s
                .uid_fetch("1:*", "(UID BODY.PEEK[])")
                .await?
                .try_collect()
                .await?;
            let mut msgs: Vec<(u32, Vec<u8>)> = fetches
                .iter()
                .map(|f| {
                    (
                        f.uid.unwrap_or(0),
                        f.body().map(<[u8]>::to_vec).unwrap_or_default(),
                    )
                })
                .collect();
            msgs.sort_by_key(|(uid, _)| *uid);
            Ok(msgs.into_iter().map(|(_, m)| m).collect())
        }
        .await;
        let _ = s.logout().await;
        r.unwrap_or_else(|e| self.fail(&format!("fetching {user} {folder}"), e))
    }

    /// STATUS MESSAGES; 0 if the folder does not exist.
    pub async fn count(&self, user: &str, folder: &str) -> usize {
        let mut s = self.session_or_panic(user).await;
        let n = status_messages(&mut s, folder).await;
        let _ = s.logout().await;
        n.unwrap_or_else(|e| self.fail(&format!("STATUS {user} {folder}"), e))
    }

    /// Polls (STATUS on one connection, every 50 ms at first, every 200 ms after a second) until
    /// the folder holds at least `n` messages or the timeout passes; returns the last count seen.
    pub async fn wait_for_count(
        &self,
        user: &str,
        folder: &str,
        n: usize,
        timeout: Duration,
    ) -> usize {
        let start = Instant::now();
        let deadline = start + timeout;
        let mut session: Option<ImapSession> = None;
        let mut last = 0;
        loop {
            if session.is_none() {
                session = self.imap_session(user).await.ok();
            }
            if let Some(s) = session.as_mut() {
                match status_messages(s, folder).await {
                    Ok(c) => last = c,
                    Err(_) => session = None,
                }
            }
            if last >= n || Instant::now() >= deadline {
                break;
            }
            let pause = if start.elapsed() < Duration::from_secs(1) {
                50
            } else {
                200
            };
            tokio::time::sleep(Duration::from_millis(pause)).await;
        }
        if let Some(mut s) = session {
            let _ = s.logout().await;
        }
        last
    }

    /// Polls (STATUS) until the folder is empty or missing, or the timeout passes; returns the
    /// last count seen. For the source side of a MOVE, or of COPY + EXPUNGE, which another
    /// session may see in both folders for a moment.
    pub async fn wait_for_empty(&self, user: &str, folder: &str, timeout: Duration) -> usize {
        let deadline = Instant::now() + timeout;
        loop {
            let n = self.count(user, folder).await;
            if n == 0 || Instant::now() >= deadline {
                return n;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// How many times Postfix accepted a message with this Message-ID (without angle brackets):
    /// the `cleanup` lines of its log, one per queue file. A client that sent the message twice
    /// shows 2; Postfix delivering one queued message twice to Dovecot still shows 1.
    pub fn accepted(&self, message_id: &str) -> usize {
        let log = std::fs::read_to_string(self.dir.join("log/postfix.log")).unwrap_or_default();
        let needle = format!(": message-id=<{message_id}>");
        log.lines()
            .filter(|l| l.contains("/cleanup[") && l.ends_with(&needle))
            .count()
    }

    /// STATUS UIDVALIDITY of the folder (panics if it does not exist).
    pub async fn uid_validity(&self, user: &str, folder: &str) -> u32 {
        let mut s = self.session_or_panic(user).await;
        let r = s.status(folder, "(UIDVALIDITY)").await;
        let _ = s.logout().await;
        match r {
            Ok(m) => m
                .uid_validity
                .unwrap_or_else(|| self.fail("STATUS", anyhow!("no UIDVALIDITY"))),
            Err(e) => self.fail(&format!("STATUS {user} {folder}"), e.into()),
        }
    }

    /// Polls the folder until it holds a message with each of `ids` (Message-IDs without angle
    /// brackets) and returns everything it holds then; panics after `timeout`, naming the
    /// missing ones. Copies of one Message-ID count once: after a daemon was stopped mid-delivery
    /// a message may legitimately arrive twice (SMTP and LMTP are at-least-once), see
    /// [`assert_only_ids`].
    pub async fn wait_for_message_ids(
        &self,
        user: &str,
        folder: &str,
        ids: &[&str],
        timeout: Duration,
    ) -> Vec<Vec<u8>> {
        let deadline = Instant::now() + timeout;
        loop {
            // STATUS first: fetching whole messages at every poll would cost more.
            let at_least = self.count(user, folder).await;
            if at_least >= ids.len() {
                let msgs = self.fetch_all(user, folder).await;
                let have = message_id_counts(&msgs);
                let missing: Vec<&&str> =
                    ids.iter().filter(|id| !have.contains_key(**id)).collect();
                if missing.is_empty() {
                    return msgs;
                }
                if Instant::now() > deadline {
                    self.fail(
                        &format!("waiting for mail in {user} {folder}"),
                        anyhow!("missing {missing:?}; the folder holds {have:?}"),
                    );
                }
            } else if Instant::now() > deadline {
                self.fail(
                    &format!("waiting for mail in {user} {folder}"),
                    anyhow!("{at_least} message(s), expected {ids:?}"),
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// The Message-ID of a raw message, without angle brackets (header name in any case, folded
/// lines joined).
pub fn message_id(raw: &[u8]) -> Option<String> {
    let text = String::from_utf8_lossy(raw);
    let head = text
        .split("\r\n\r\n")
        .next()
        .unwrap_or("")
        .replace("\r\n ", " ")
        .replace("\r\n\t", " ");
    head.split("\r\n").find_map(|line| {
        let (name, value) = line.split_once(':')?;
        name.trim()
            .eq_ignore_ascii_case("message-id")
            .then(|| value.trim().trim_matches(['<', '>']).to_string())
    })
}

/// How many messages carry each Message-ID (`""` for none).
pub fn message_id_counts(msgs: &[Vec<u8>]) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for m in msgs {
        *counts.entry(message_id(m).unwrap_or_default()).or_insert(0) += 1;
    }
    counts
}

/// What the mail protocols promise after a daemon was stopped or killed mid-delivery: every
/// message in `ids` arrived, possibly more than once (a delivery whose 250 was lost is made
/// again, RFC 5321 section 6.1), and nothing else did. Returns the copies per Message-ID.
pub fn assert_only_ids(msgs: &[Vec<u8>], ids: &[&str], what: &str) -> BTreeMap<String, usize> {
    let counts = message_id_counts(msgs);
    for id in ids {
        assert!(counts.contains_key(*id), "{what}: {id} missing: {counts:?}");
    }
    for id in counts.keys() {
        assert!(
            ids.contains(&id.as_str()),
            "{what}: unexpected message {id:?}: {counts:?}"
        );
    }
    counts
}

impl Drop for MailStack {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let log = self.log();
            let lines: Vec<&str> = log.lines().collect();
            let tail = lines[lines.len().saturating_sub(60)..].join("\n");
            eprintln!(
                "mailstack {} (set POSTDESK_KEEP_MAILSTACK=1 to keep it), last log lines:\n{tail}",
                self.dir.display()
            );
        }
        self.stop_postfix();
        self.stop_dovecot();
        self.release_ports();
        if std::env::var_os("POSTDESK_KEEP_MAILSTACK").is_some() {
            eprintln!(
                "mailstack: kept {} (spool and mail in {})",
                self.dir.display(),
                self.store.display()
            );
        } else {
            let _ = std::fs::remove_dir_all(&self.dir);
            if self.store != self.dir {
                let _ = std::fs::remove_dir_all(&self.store);
            }
        }
    }
}

async fn status_messages(s: &mut ImapSession, folder: &str) -> Result<usize> {
    match s.status(folder, "(MESSAGES)").await {
        Ok(m) => Ok(m.exists as usize),
        Err(async_imap::error::Error::No(_)) => Ok(0),
        Err(e) => Err(e.into()),
    }
}

// ----- just enough IMAP for a fast APPEND -----

struct RawImap {
    s: BufReader<TcpStream>,
    tag: u32,
}

impl RawImap {
    async fn login(port: u16, user: &str) -> Result<RawImap> {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let r: Result<RawImap> = async {
                let tcp = TcpStream::connect(("127.0.0.1", port)).await?;
                tcp.set_nodelay(true)?;
                let mut c = RawImap {
                    s: BufReader::new(tcp),
                    tag: 0,
                };
                let greeting = c.line().await?;
                if !greeting.starts_with("* OK") {
                    bail!("IMAP greeting: {greeting}");
                }
                Ok(c)
            }
            .await;
            match r {
                Ok(mut c) => {
                    let login = format!("LOGIN {} {}", imap_quote(user), imap_quote(PASSWORD));
                    let (ok, line) = c.command(login.as_bytes()).await?;
                    if !ok {
                        bail!("IMAP LOGIN as {user}: {line}");
                    }
                    return Ok(c);
                }
                Err(e) if Instant::now() > deadline => return Err(e),
                Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        }
    }

    async fn line(&mut self) -> Result<String> {
        let mut buf = Vec::new();
        if self.s.read_until(b'\n', &mut buf).await? == 0 {
            bail!("IMAP connection closed");
        }
        Ok(String::from_utf8_lossy(&buf).trim_end().to_string())
    }

    /// Sends `<tag> <cmd>` and reads up to the tagged reply; (OK?, that line). The responses
    /// expected here (LOGIN, CREATE, APPEND, LOGOUT) carry no literals.
    async fn command(&mut self, cmd: &[u8]) -> Result<(bool, String)> {
        self.tag += 1;
        let tag = format!("p{}", self.tag);
        let mut out = Vec::with_capacity(cmd.len() + 16);
        out.extend_from_slice(tag.as_bytes());
        out.push(b' ');
        out.extend_from_slice(cmd);
        out.extend_from_slice(b"\r\n");
        self.s.get_mut().write_all(&out).await?;
        loop {
            let line = self.line().await?;
            if let Some(rest) = line.strip_prefix(&format!("{tag} ")) {
                return Ok((rest.starts_with("OK"), line));
            }
        }
    }
}

fn imap_quote(s: &str) -> String {
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
}

// ----- a minimal pipelining SMTP client -----

struct Smtp {
    s: BufReader<TcpStream>,
}

impl Smtp {
    async fn connect(port: u16) -> Result<Smtp> {
        let tcp = TcpStream::connect(("127.0.0.1", port))
            .await
            .with_context(|| format!("connecting to 127.0.0.1:{port}"))?;
        tcp.set_nodelay(true)?;
        let mut c = Smtp {
            s: BufReader::new(tcp),
        };
        c.expect(220, "greeting").await?;
        c.write(b"EHLO postdesk-test\r\n").await?;
        c.expect(250, "EHLO").await?;
        Ok(c)
    }

    async fn write(&mut self, bytes: &[u8]) -> Result<()> {
        self.s.get_mut().write_all(bytes).await?;
        Ok(())
    }

    async fn reply(&mut self) -> Result<(u16, String)> {
        let mut text = String::new();
        loop {
            let mut line = String::new();
            if self.s.read_line(&mut line).await? == 0 {
                bail!("SMTP connection closed (after {text:?})");
            }
            text.push_str(&line);
            let code = line
                .get(..3)
                .and_then(|c| c.parse::<u16>().ok())
                .ok_or_else(|| anyhow!("bad SMTP reply line {line:?}"))?;
            if line.as_bytes().get(3) != Some(&b'-') {
                return Ok((code, text.trim_end().to_string()));
            }
        }
    }

    async fn expect(&mut self, code: u16, what: &str) -> Result<String> {
        let (got, text) = self.reply().await?;
        if got != code {
            bail!("SMTP {what}: expected {code}, got {text}");
        }
        Ok(text)
    }

    /// The replies to a pipelined MAIL, RCPT, DATA.
    async fn envelope_replies(&mut self) -> Result<()> {
        let mail = self.reply().await?;
        let rcpt = self.reply().await?;
        let data = self.reply().await?;
        if mail.0 != 250 {
            bail!("SMTP MAIL FROM: {}", mail.1);
        }
        if rcpt.0 != 250 && rcpt.0 != 251 {
            bail!("SMTP RCPT TO: {}", rcpt.1);
        }
        if data.0 != 354 {
            bail!("SMTP DATA: {}", data.1);
        }
        Ok(())
    }
}

fn envelope(from: &str, to: &str, raw: &[u8]) -> Vec<u8> {
    let mut params = String::new();
    if raw.iter().any(|b| *b >= 0x80) {
        params.push_str(" BODY=8BITMIME");
    }
    if !from.is_ascii() || !to.is_ascii() {
        params.push_str(" SMTPUTF8");
    }
    format!("MAIL FROM:<{from}>{params}\r\nRCPT TO:<{to}>\r\nDATA\r\n").into_bytes()
}

/// The DATA payload: CRLF line ends, leading dots doubled, terminated by `.`.
fn dot_stuff(raw: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(raw.len() + raw.len() / 40 + 8);
    let mut at_line_start = true;
    for (i, &b) in raw.iter().enumerate() {
        if at_line_start && b == b'.' {
            out.push(b'.');
        }
        if b == b'\n' && (i == 0 || raw[i - 1] != b'\r') {
            out.push(b'\r');
        }
        out.push(b);
        at_line_start = b == b'\n';
    }
    if !out.is_empty() && !out.ends_with(b"\r\n") {
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b".\r\n");
    out
}

fn percent_encode(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

// ----- processes, files, ports -----

fn spawn_daemon(cmd: &mut Command, stderr_file: &Path) -> Result<Child> {
    let out = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(stderr_file)?;
    let child = cmd
        .stdin(Stdio::null())
        .stdout(out.try_clone()?)
        .stderr(out)
        // Its own process group, so that stopping it reaches every child.
        .process_group(0)
        .spawn()?;
    Ok(child)
}

fn stop_daemon(slot: &Mutex<Option<Child>>) {
    let child = slot.lock().unwrap_or_else(|e| e.into_inner()).take();
    let Some(mut child) = child else { return };
    let pgid = child.id() as libc::pid_t;
    signal_group(pgid, libc::SIGTERM);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match child.try_wait() {
            Ok(Some(_)) => break,
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(2)),
            _ => {
                signal_group(pgid, libc::SIGKILL);
                let _ = child.wait();
                break;
            }
        }
    }
    // The master's children (smtpd, imap-login...) may hold the listening sockets: wait until
    // the whole group is gone so that a restart can bind the same ports.
    let deadline = Instant::now() + Duration::from_secs(5);
    while group_alive(pgid) {
        if Instant::now() > deadline {
            signal_group(pgid, libc::SIGKILL);
            std::thread::sleep(Duration::from_millis(50));
            break;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

fn signal_group(pgid: libc::pid_t, sig: libc::c_int) {
    if pgid > 1 {
        // SAFETY: kill(2) with a negative pid signals a process group; no memory is involved.
        unsafe {
            libc::kill(-pgid, sig);
        }
    }
}

/// Whether any live (non-zombie) process is in the process group.
fn group_alive(pgid: libc::pid_t) -> bool {
    let Ok(rd) = std::fs::read_dir("/proc") else {
        return false;
    };
    for entry in rd.flatten() {
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if !name.bytes().all(|b| b.is_ascii_digit()) {
            continue;
        }
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        // "pid (comm) state ppid pgrp ..."; comm may contain spaces and parentheses.
        let Some(rest) = stat.rfind(')').map(|i| &stat[i + 1..]) else {
            continue;
        };
        let fields: Vec<&str> = rest.split_whitespace().collect();
        if fields.len() > 2 && fields[0] != "Z" && fields[2] == pgid.to_string() {
            return true;
        }
    }
    false
}

/// Field 22 of /proc/<pid>/stat (start time in clock ticks since boot), to tell a live owner
/// from a reused pid.
fn process_start_time(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(19)?.parse().ok()
}

/// Stops the daemons of stacks whose owner process is gone (killed before its Drop ran) and
/// removes their directories.
fn reap_orphans() {
    let Ok(rd) = std::fs::read_dir("/tmp") else {
        return;
    };
    for entry in rd.flatten() {
        let name = entry.file_name().to_string_lossy().to_string();
        if !name.starts_with(DIR_PREFIX) {
            continue;
        }
        let dir = entry.path();
        let Ok(owner) = std::fs::read_to_string(dir.join("owner")) else {
            continue;
        };
        let mut parts = owner.split_whitespace();
        let (Some(pid), Some(start)) = (
            parts.next().and_then(|p| p.parse::<u32>().ok()),
            parts.next().and_then(|s| s.parse::<u64>().ok()),
        ) else {
            continue;
        };
        if process_start_time(pid) == Some(start) {
            continue; // its owner still runs
        }
        let dir_str = dir.to_string_lossy().to_string();
        let mut groups = Vec::new();
        for f in ["postfix.pid", "dovecot.pid"] {
            let Some(master) = std::fs::read_to_string(dir.join(f))
                .ok()
                .and_then(|p| p.trim().parse::<libc::pid_t>().ok())
            else {
                continue;
            };
            let cmdline = std::fs::read(format!("/proc/{master}/cmdline")).unwrap_or_default();
            if String::from_utf8_lossy(&cmdline).contains(&dir_str) {
                signal_group(master, libc::SIGTERM);
                groups.push(master);
            }
        }
        let deadline = Instant::now() + Duration::from_secs(3);
        while groups.iter().any(|g| group_alive(*g)) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        for g in groups {
            signal_group(g, libc::SIGKILL);
        }
        if !dir.join("keep").exists() {
            let _ = std::fs::remove_dir_all(&dir);
            let _ = std::fs::remove_dir_all(Path::new(SHM).join(&name));
        }
    }
    // Storage left in /dev/shm by a stack whose directory is gone.
    let Ok(rd) = std::fs::read_dir(SHM) else {
        return;
    };
    for entry in rd.flatten() {
        let name = entry.file_name();
        if name.to_string_lossy().starts_with(DIR_PREFIX) && !Path::new("/tmp").join(&name).exists()
        {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

const SHM: &str = "/dev/shm";

/// `/dev/shm/<same name as dir>` if /dev/shm is a tmpfs with room, else `dir` itself.
fn make_store(dir: &Path) -> PathBuf {
    const TMPFS_MAGIC: i64 = 0x0102_1994;
    let shm = CString::new(SHM).unwrap();
    // SAFETY: statfs(2) fills the zeroed struct owned here; the path is NUL-terminated.
    let (fs_type, free) = unsafe {
        let mut st: libc::statfs = std::mem::zeroed();
        if libc::statfs(shm.as_ptr(), &mut st) != 0 {
            return dir.to_path_buf();
        }
        (st.f_type as i64, st.f_bavail as u64 * st.f_bsize as u64)
    };
    if fs_type != TMPFS_MAGIC || free < (1 << 30) {
        return dir.to_path_buf();
    }
    let store = Path::new(SHM).join(dir.file_name().unwrap());
    match std::fs::create_dir(&store) {
        Ok(()) => {
            let _ = std::fs::set_permissions(&store, std::fs::Permissions::from_mode(0o755));
            store
        }
        Err(_) => dir.to_path_buf(),
    }
}

/// mkdtemp("/tmp/postdesk-mail.XXXXXX"), world-searchable, with an `owner` file.
fn make_dir() -> PathBuf {
    let template = CString::new(format!("/tmp/{DIR_PREFIX}XXXXXX")).unwrap();
    let mut bytes = template.into_bytes_with_nul();
    // SAFETY: `bytes` is a writable NUL-terminated buffer, as mkdtemp(3) requires.
    let p = unsafe { libc::mkdtemp(bytes.as_mut_ptr().cast()) };
    assert!(
        !p.is_null(),
        "mailstack: mkdtemp failed: {}",
        std::io::Error::last_os_error()
    );
    bytes.pop();
    let dir = PathBuf::from(String::from_utf8(bytes).unwrap());
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    let me = std::process::id();
    let start = process_start_time(me).unwrap_or(0);
    std::fs::write(dir.join("owner"), format!("{me} {start}\n")).unwrap();
    if std::env::var_os("POSTDESK_KEEP_MAILSTACK").is_some() {
        std::fs::write(dir.join("keep"), "").unwrap();
    }
    dir
}

/// Distinct free loopback ports below the ephemeral range, each bind-tested.
fn pick_ports(n: usize) -> Vec<u16> {
    let mut rng = RandomState::new().build_hasher();
    rng.write_u128(
        SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos(),
    );
    rng.write_u32(std::process::id());
    let mut state = rng.finish() | 1;
    let mut in_use = PORTS_IN_USE.lock().unwrap_or_else(|e| e.into_inner());
    let mut ports = Vec::new();
    while ports.len() < n {
        // xorshift64
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        let port = 20000 + (state % 12000) as u16;
        if in_use.contains(&port) || ports.contains(&port) {
            continue;
        }
        let addr: SocketAddr = ([127, 0, 0, 1], port).into();
        if TcpListener::bind(addr).is_ok() {
            ports.push(port);
        }
    }
    in_use.extend_from_slice(&ports);
    ports
}

/// Whether the server on the port greets with `prefix` ... `mark`.
fn greeting(port: u16, prefix: &str, mark: &str, bye: &[u8]) -> bool {
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    let Ok(mut s) = std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(500)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    let mut buf = Vec::new();
    let mut chunk = [0u8; 512];
    while !buf.ends_with(b"\r\n") {
        match s.read(&mut chunk) {
            Ok(0) | Err(_) => return false,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
    let _ = s.write_all(bye);
    let line = String::from_utf8_lossy(&buf);
    line.starts_with(prefix) && line.contains(mark)
}

/// Every regular file under `dir`, recursively (Postfix hashes `deferred` into subfolders);
/// nothing if it does not exist.
fn collect_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in rd.flatten() {
        match entry.file_type() {
            Ok(t) if t.is_dir() => collect_files(&entry.path(), out),
            Ok(_) => out.push(entry.path()),
            Err(_) => {}
        }
    }
}

fn run(cmd: &mut Command) -> Result<()> {
    let out = cmd.output().with_context(|| format!("running {cmd:?}"))?;
    if !out.status.success() {
        bail!(
            "{cmd:?} failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

fn mkdir(path: &Path, mode: u32, owner: Option<(u32, u32)>) -> Result<()> {
    std::fs::create_dir_all(path).with_context(|| format!("mkdir {}", path.display()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))?;
    if let Some((uid, gid)) = owner {
        std::os::unix::fs::chown(path, Some(uid), Some(gid))
            .with_context(|| format!("chown {}", path.display()))?;
    }
    Ok(())
}

fn write_file(path: &Path, contents: &str, mode: u32) -> Result<()> {
    std::fs::write(path, contents).with_context(|| format!("writing {}", path.display()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))?;
    Ok(())
}

fn backdate(path: &Path) -> Result<()> {
    let f = std::fs::File::options()
        .write(true)
        .open(path)
        .with_context(|| format!("opening {}", path.display()))?;
    f.set_modified(SystemTime::now() - Duration::from_secs(60))?;
    Ok(())
}

fn user_ids(name: &str) -> Option<(u32, u32)> {
    let cname = CString::new(name).ok()?;
    // SAFETY: getpwnam_r writes into `pwd` and `buf`, both owned here and large enough (it
    // reports ERANGE otherwise); `result` is checked before use.
    unsafe {
        let mut pwd: libc::passwd = std::mem::zeroed();
        let mut buf = vec![0 as libc::c_char; 16384];
        let mut result: *mut libc::passwd = std::ptr::null_mut();
        let rc = libc::getpwnam_r(
            cname.as_ptr(),
            &mut pwd,
            buf.as_mut_ptr(),
            buf.len(),
            &mut result,
        );
        if rc != 0 || result.is_null() {
            return None;
        }
        Some((pwd.pw_uid, pwd.pw_gid))
    }
}

fn group_id(name: &str) -> Option<u32> {
    let cname = CString::new(name).ok()?;
    // SAFETY: as in `user_ids`.
    unsafe {
        let mut grp: libc::group = std::mem::zeroed();
        let mut buf = vec![0 as libc::c_char; 16384];
        let mut result: *mut libc::group = std::ptr::null_mut();
        let rc = libc::getgrnam_r(
            cname.as_ptr(),
            &mut grp,
            buf.as_mut_ptr(),
            buf.len(),
            &mut result,
        );
        if rc != 0 || result.is_null() {
            return None;
        }
        Some(grp.gr_gid)
    }
}
