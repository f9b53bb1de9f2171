//! The `postdesk` command line. Each subcommand calls into the library; exit codes follow
//! sysexits: 65 quarantined (EX_DATAERR), 75 try again later (EX_TEMPFAIL), 78 bad config
//! (EX_CONFIG).

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

use chrono::Utc;
use clap::{Parser, Subcommand};
use tokio::sync::watch;

use postdesk::config::{Config, DatabaseUrl};
use postdesk::desk::Status;
use postdesk::inbound::pipe::{Overflow, read_message};
use postdesk::pipeline::{self, Desk};
use postdesk::store::{PgStore, SqliteStore, Store, StoreError, TicketDetail, TicketSummary};
use postdesk::worker::{self, RunOptions};

const EX_DATAERR: u8 = 65;
const EX_TEMPFAIL: u8 = 75;
const EX_CONFIG: u8 = 78;

#[derive(Parser)]
#[command(
    name = "postdesk",
    version,
    about = "A support desk that runs on email"
)]
struct Cli {
    /// Config file (TOML). Without one, the embedded defaults serve.
    #[arg(long, global = true, env = "POSTDESK_CONFIG")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Create or update the database schema.
    Migrate,
    /// Take one message from a file or standard input (for an MTA pipe).
    /// Exit 0 taken, 65 quarantined, 75 try again later.
    Ingest {
        /// The raw message; `-` or nothing reads standard input.
        file: Option<PathBuf>,
        /// Take it as of this instant (RFC 3339) instead of now: travel in time.
        #[arg(long)]
        now: Option<String>,
    },
    /// Say what postdesk would do with one message, changing nothing.
    Explain {
        /// The raw message; `-` reads standard input.
        file: PathBuf,
        /// Print one JSON object.
        #[arg(long)]
        json: bool,
        /// Judge it as of this instant (RFC 3339) instead of now.
        #[arg(long)]
        now: Option<String>,
    },
    /// Look at tickets.
    Tickets {
        #[command(subcommand)]
        command: TicketsCommand,
    },
    /// Run the SLA clock: status updates, reminders, close pending after silence, auto-close,
    /// escalations and breach notices that are due.
    Sweep {
        /// Run one sweep and exit (for cron and tests).
        #[arg(long)]
        once: bool,
        /// Sweep as of this instant (RFC 3339) instead of now: travel in time.
        #[arg(long)]
        now: Option<String>,
        /// Print what was done as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Queue the daily digest of open tickets now (`postdesk run` sends it at `digest.schedule`).
    Digest {
        /// Queue it once and exit (for cron and tests).
        #[arg(long)]
        once: bool,
        /// As of this instant (RFC 3339) instead of now.
        #[arg(long)]
        now: Option<String>,
    },
    /// Service levels.
    Sla {
        #[command(subcommand)]
        command: SlaCommand,
    },
    /// Run the worker until SIGINT/SIGTERM.
    Run {
        /// Stop once the mailbox and the outbox are empty.
        #[arg(long)]
        exit_when_idle: bool,
    },
    /// Check or preview the mail templates.
    Templates {
        #[command(subcommand)]
        command: TemplatesCommand,
    },
    /// Measure end-to-end throughput on generated mail.
    Bench {
        #[command(subcommand)]
        command: BenchCommand,
    },
}

#[derive(Subcommand)]
enum TicketsCommand {
    /// List tickets, newest first.
    List {
        /// Only tickets with this status (in_triage, engineer_pending, ...).
        #[arg(long)]
        status: Option<Status>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Show one ticket: participants, messages, history and outbox.
    Show {
        /// The ticket number.
        number: i64,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
enum SlaCommand {
    /// A ticket's deadlines and how each was computed (calendar, open periods, holidays,
    /// recomputations).
    Explain {
        /// The ticket number.
        number: i64,
        /// Print JSON.
        #[arg(long)]
        json: bool,
        /// Judge breaches as of this instant (RFC 3339) instead of now.
        #[arg(long)]
        now: Option<String>,
    },
}

#[derive(Subcommand)]
enum TemplatesCommand {
    /// Validate every template and override; list every error with file and line (exit 1).
    Check {
        /// Template folder (default: templates.dir).
        #[arg(long)]
        dir: Option<PathBuf>,
    },
    /// Render one template: print the headers and the text part, write the .eml and .html.
    Preview(postdesk::outbound::preview::PreviewArgs),
}

#[derive(Subcommand)]
enum BenchCommand {
    /// Maildir -> tickets + acknowledgement files, with durable commits.
    Ingest {
        /// Messages to generate.
        #[arg(long, default_value_t = 10_000)]
        messages: usize,
        /// Database: a sqlite: URL, or a postgres:// server URL on which a fresh database is made.
        /// Default: a new SQLite file in the work directory.
        #[arg(long)]
        database: Option<String>,
        /// Work directory, kept afterwards (default: a new temporary directory, removed however
        /// the run ends).
        #[arg(long)]
        dir: Option<PathBuf>,
        /// Messages per transaction (default: worker.batch_size).
        #[arg(long)]
        batch: Option<usize>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Customer replies against a seeded store: replies per second and p99 (threading lookups).
    Replies {
        /// Tickets to seed (each with its requester and a sent acknowledgement).
        #[arg(long, default_value_t = 100_000)]
        tickets: i64,
        /// Inbound messages to seed, spread over the tickets.
        #[arg(long, default_value_t = 1_000_000)]
        messages: i64,
        /// Replies to take (half threaded by In-Reply-To, half by the subject tag).
        #[arg(long, default_value_t = 2_000)]
        replies: usize,
        /// Database: a sqlite: URL, or a postgres:// server URL on which a fresh database is made
        /// and dropped. Default: a new SQLite file in a temporary directory, removed afterwards.
        #[arg(long)]
        database: Option<String>,
        /// Replies per transaction (default: worker.batch_size).
        #[arg(long)]
        batch: Option<usize>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

/// Runs `$body` with `$store` bound to the configured backend.
macro_rules! with_store {
    ($config:expr, |$store:ident| $body:expr) => {
        match &$config.database_url {
            DatabaseUrl::Sqlite(url) => {
                let $store = SqliteStore::open(url).await?;
                $body
            }
            DatabaseUrl::Postgres(url) => {
                let $store = PgStore::open(url).await?;
                $body
            }
        }
    };
}

/// Like `with_store!`, for commands that only read: a SQLite database must exist already
/// (it is never created) and a missing one is an error naming its URL.
macro_rules! with_existing_store {
    ($config:expr, |$store:ident| $body:expr) => {
        match &$config.database_url {
            DatabaseUrl::Sqlite(url) => {
                let $store = SqliteStore::open_existing(url).await?;
                $body
            }
            DatabaseUrl::Postgres(url) => {
                let $store = PgStore::open(url).await?;
                $body
            }
        }
    };
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let env: std::collections::BTreeMap<String, String> = std::env::vars().collect();
    for warning in postdesk::config::unknown_env_warnings(&env) {
        eprintln!("postdesk: warning: {warning}");
    }
    let config = match Config::load_with_env(cli.config.as_deref(), &env) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("postdesk: {e}");
            return ExitCode::from(EX_CONFIG);
        }
    };
    let default_filter = match cli.command {
        Command::Bench { .. } => postdesk::bench::LOG_FILTER,
        _ => "info,sqlx=warn",
    };
    init_logging(&config, default_filter);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("postdesk: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async move {
        match cli.command {
            Command::Ingest { file, now } => match parse_now(now.as_deref()) {
                Ok(now) => ingest(&config, file, now).await,
                Err(code) => code,
            },
            other => match dispatch(&config, other).await {
                Ok(code) => code,
                Err(e) => {
                    eprintln!("postdesk: {e:#}");
                    ExitCode::FAILURE
                }
            },
        }
    })
}

/// Logging to stderr with `POSTDESK_LOG` as the filter, or `default_filter` without it.
fn init_logging(config: &Config, default_filter: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("POSTDESK_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_filter));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    if config.log_format == "json" {
        builder.json().init();
    } else {
        builder.init();
    }
}

fn load_desk(config: &Config) -> Result<Desk, ExitCode> {
    Desk::from_config(config).map_err(|e| {
        eprintln!("postdesk: {e}");
        ExitCode::from(EX_CONFIG)
    })
}

async fn dispatch(config: &Config, command: Command) -> anyhow::Result<ExitCode> {
    match command {
        Command::Migrate => {
            with_store!(config, |store| store.migrate().await?);
            println!("database schema is up to date ({:?})", config.database_url);
            Ok(ExitCode::SUCCESS)
        }
        Command::Ingest { .. } => unreachable!("handled in main"),
        Command::Explain { file, json, now } => {
            let now = match parse_now(now.as_deref()) {
                Ok(n) => n,
                Err(code) => return Ok(code),
            };
            let desk = match load_desk(config) {
                Ok(d) => d,
                Err(code) => return Ok(code),
            };
            let item = read_message(Some(&file), &desk.limits, Overflow::Count)?;
            let explanation = match &config.database_url {
                DatabaseUrl::Sqlite(url) => match SqliteStore::open_read_only(url).await {
                    Ok(store) => pipeline::explain(Some(&store), &desk, &item, now).await,
                    Err(e) => {
                        eprintln!("postdesk: note: {e}; judging the message as the first one seen");
                        pipeline::explain::<SqliteStore>(None, &desk, &item, now).await
                    }
                },
                DatabaseUrl::Postgres(url) => {
                    let store = PgStore::open(url).await?;
                    pipeline::explain(Some(&store), &desk, &item, now).await
                }
            };
            let explanation = match explanation {
                Ok(e) => e,
                // A database without the schema yet: judge the message as the first one seen.
                Err(StoreError::Database(_)) => {
                    pipeline::explain::<SqliteStore>(None, &desk, &item, now).await?
                }
                Err(e) => return Err(e.into()),
            };
            if json {
                println!("{}", serde_json::to_string_pretty(&explanation)?);
            } else {
                let e = &explanation;
                println!("from:      {}", e.from.as_deref().unwrap_or("-"));
                println!("subject:   {}", e.subject.as_deref().unwrap_or("-"));
                if let Some(s) = &e.severity {
                    let requested = s
                        .requested
                        .map(|r| format!("Sev {r}"))
                        .unwrap_or_else(|| "not given".into());
                    println!(
                        "severity:  requested {requested}, assigned Sev {}{}",
                        s.assigned,
                        if s.downgraded {
                            " (downgraded: email cannot open Sev 1/2)"
                        } else {
                            ""
                        }
                    );
                }
                println!(
                    "action:    {}{}",
                    e.action,
                    e.ticket
                        .map(|t| format!(" (ticket #{t})"))
                        .unwrap_or_default()
                );
                if let Some(m) = &e.matched {
                    println!("matched:   {}", m.describe());
                }
                if let Some(i) = &e.ignored {
                    println!("ignored:   {i}");
                }
                if let Some(c) = &e.status_change {
                    println!("status:    {} -> {} ({})", c.from, c.to, c.reason);
                }
                println!("reason:    {}", e.reason);
                match &e.staff_auth {
                    postdesk::desk::StaffAuth::NotChecked => {}
                    postdesk::desk::StaffAuth::Pass(how) => {
                        println!("staff:     authenticated ({how})")
                    }
                    postdesk::desk::StaffAuth::Fail(why) => {
                        println!("staff:     NOT authenticated ({why})")
                    }
                }
                for r in &e.rejected {
                    println!("rejected:  line {}: {} ({})", r.line, r.text, r.problem);
                }
                if let Some(a) = &e.update.assignee {
                    println!("assign:    {a}");
                }
                if let Some(s) = &e.update.severity {
                    println!("severity:  set to {s}");
                }
                if let Some(r) = &e.report {
                    for f in &r.recipients {
                        println!(
                            "report:    {} {} {}",
                            f.address,
                            f.status.as_deref().unwrap_or("-"),
                            f.diagnostic.as_deref().unwrap_or("")
                        );
                    }
                    if let Some(id) = &r.original_message_id {
                        println!("original:  <{id}>");
                    }
                }
                if e.outbound.is_empty() {
                    println!("outbound:  none");
                }
                for o in &e.outbound {
                    match o.notice {
                        Some(n) => println!("outbound:  {} ({n}) to {}", o.template, o.to),
                        None => println!("outbound:  {} to {}", o.template, o.to),
                    }
                }
                if let Some(text) = &e.text {
                    println!("text:");
                    for line in text.lines() {
                        println!("  | {line}");
                    }
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Tickets { command } => {
            with_existing_store!(config, |store| {
                store.migrate().await?;
                tickets(&store, command).await
            })
        }
        Command::Sweep { once, now, json } => {
            let (now, desk) = match one_shot(
                config,
                once,
                now.as_deref(),
                "`postdesk sweep` runs one sweep with --once (`postdesk run` sweeps by itself)",
            ) {
                Ok(r) => r,
                Err(code) => return Ok(code),
            };
            with_store!(config, |store| {
                store.migrate().await?;
                let report = pipeline::sweep(&store, &desk, now).await?;
                if json {
                    println!("{}", serde_json::to_string_pretty(&report)?);
                } else {
                    for t in &report.tickets {
                        println!("#{}: {}", t.ticket, t.reason);
                        for q in &t.queued {
                            println!("  queued {} to {}", q.template, q.to);
                        }
                    }
                    println!(
                        "{} ticket(s) due, {} changed",
                        report.due,
                        report.tickets.len()
                    );
                }
                Ok(ExitCode::SUCCESS)
            })
        }
        Command::Digest { once, now } => {
            let (now, desk) = match one_shot(
                config,
                once,
                now.as_deref(),
                "`postdesk digest` queues the digest with --once (`postdesk run` sends it on schedule)",
            ) {
                Ok(r) => r,
                Err(code) => return Ok(code),
            };
            let zone = desk.policy.calendars.zone_of(&config.digest_calendar);
            with_store!(config, |store| {
                store.migrate().await?;
                let queued = pipeline::digest(&store, &desk, zone, now).await?;
                for q in &queued {
                    println!("queued {} to {}", q.template, q.to);
                }
                println!("{} digest(s) queued", queued.len());
                Ok(ExitCode::SUCCESS)
            })
        }
        Command::Sla {
            command: SlaCommand::Explain { number, json, now },
        } => {
            let now = match parse_now(now.as_deref()) {
                Ok(n) => n,
                Err(code) => return Ok(code),
            };
            let policy = config.policy();
            with_existing_store!(config, |store| {
                store.migrate().await?;
                match store.ticket_detail(number).await {
                    Ok(detail) => {
                        let e = postdesk::sla::explain::explain(
                            &detail.ticket,
                            &detail.history,
                            &policy,
                            now,
                        );
                        if json {
                            println!("{}", serde_json::to_string_pretty(&e)?);
                        } else {
                            print_sla(&e);
                        }
                        Ok(ExitCode::SUCCESS)
                    }
                    Err(StoreError::NotFound) => {
                        eprintln!("postdesk: no ticket #{number}");
                        Ok(ExitCode::from(1))
                    }
                    Err(e) => Err(e.into()),
                }
            })
        }
        Command::Run { exit_when_idle } => {
            let desk = match load_desk(config) {
                Ok(d) => d,
                Err(code) => return Ok(code),
            };
            let (tx, rx) = watch::channel(false);
            tokio::spawn(async move {
                wait_for_signal().await;
                tracing::info!("shutdown requested: finishing the message in hand");
                let _ = tx.send(true);
            });
            let options = RunOptions {
                exit_when_idle,
                record_latencies: false,
            };
            with_store!(config, |store| {
                store.migrate().await?;
                match worker::run(store, config, desk, options, rx).await {
                    Ok(_) => {}
                    // Settings that cannot work (untrusted certificate, refused login, busy
                    // http.listen, ...): say so and exit 78 instead of retrying forever.
                    Err(worker::WorkerError::Unsupported(why)) => {
                        eprintln!("postdesk: {why}");
                        return Ok(ExitCode::from(EX_CONFIG));
                    }
                    Err(e) => return Err(e.into()),
                }
            });
            Ok(ExitCode::SUCCESS)
        }
        Command::Templates { command } => templates(config, command).await,
        Command::Bench {
            command:
                BenchCommand::Ingest {
                    messages,
                    database,
                    dir,
                    batch,
                    json,
                },
        } => {
            let config = with_batch(config, batch);
            // Stopped like `run` (the work directory is then removed on the way out).
            let (tx, rx) = watch::channel(false);
            tokio::spawn(async move {
                wait_for_signal().await;
                let _ = tx.send(true);
            });
            let report =
                postdesk::bench::ingest(&config, dir.as_deref(), messages, database.as_deref(), rx)
                    .await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                println!(
                    "backend={} messages={} tickets={} acknowledgements={} batch={}\n\
                     elapsed={:.2}s throughput={:.0} msg/s p50={:.2}ms p99={:.2}ms peak_rss={:.1}MiB",
                    report.backend,
                    report.messages,
                    report.tickets,
                    report.outbox_files,
                    report.batch_size,
                    report.seconds,
                    report.messages_per_second,
                    report.p50_ms,
                    report.p99_ms,
                    report.peak_rss_mib
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Bench {
            command:
                BenchCommand::Replies {
                    tickets,
                    messages,
                    replies,
                    database,
                    batch,
                    json,
                },
        } => {
            let config = with_batch(config, batch);
            let plan = postdesk::bench::replies::RepliesPlan {
                tickets: tickets.max(1),
                messages: messages.max(0),
                replies,
            };
            let report =
                postdesk::bench::replies::bench(&config, database.as_deref(), plan).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                println!(
                    "backend={} tickets={} messages={} replies={} threaded={} batch={} seeded_in={:.1}s\n\
                     elapsed={:.2}s throughput={:.0} replies/s p50={:.2}ms p99={:.2}ms",
                    report.backend,
                    report.tickets,
                    report.messages,
                    report.replies,
                    report.threaded,
                    report.batch_size,
                    report.seed_seconds,
                    report.seconds,
                    report.replies_per_second,
                    report.p50_ms,
                    report.p99_ms
                );
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// The config with `--batch` applied (messages per transaction, at least one).
fn with_batch(config: &Config, batch: Option<usize>) -> Config {
    let mut config = config.clone();
    if let Some(b) = batch {
        config.batch_size = b.max(1);
    }
    config
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// `sweep --once` and `digest --once`: the instant (`--now`) and the desk, or the exit code that
/// says why not (64 without `--once`, with `without_once` as the reason).
fn one_shot(
    config: &Config,
    once: bool,
    now: Option<&str>,
    without_once: &str,
) -> Result<(chrono::DateTime<Utc>, Desk), ExitCode> {
    if !once {
        eprintln!("postdesk: {without_once}");
        return Err(ExitCode::from(64));
    }
    let now = parse_now(now)?;
    Ok((now, load_desk(config)?))
}

/// `postdesk ingest`: the MTA contract is the exit code, so every failure maps to one.
/// `--now`: an RFC 3339 instant, or the clock's now.
fn parse_now(now: Option<&str>) -> Result<chrono::DateTime<Utc>, ExitCode> {
    match now.map(chrono::DateTime::parse_from_rfc3339) {
        None => Ok(Utc::now()),
        Some(Ok(t)) => Ok(t.with_timezone(&Utc)),
        Some(Err(e)) => {
            eprintln!(
                "postdesk: --now: expected an RFC 3339 instant like 2026-11-30T08:00:00Z ({e})"
            );
            Err(ExitCode::from(64))
        }
    }
}

async fn ingest(config: &Config, file: Option<PathBuf>, now: chrono::DateTime<Utc>) -> ExitCode {
    let desk = match load_desk(config) {
        Ok(d) => d,
        Err(code) => return code,
    };
    // Memory stays bounded: a file over the limit is read from its head only, and standard
    // input past the limit goes to a file in limits.quarantine_dir as it arrives.
    let item = match read_message(file.as_deref(), &desk.limits, Overflow::Keep) {
        Ok(item) => item,
        Err(e) => {
            eprintln!("postdesk: {e}");
            return ExitCode::from(EX_TEMPFAIL);
        }
    };
    let result: Result<_, StoreError> = async {
        with_store!(config, |store| {
            store.migrate().await?;
            pipeline::ingest_batch(&store, &desk, std::slice::from_ref(&item), now).await
        })
    }
    .await;
    match result {
        Ok(outcomes) => {
            let Some(o) = outcomes.first() else {
                return ExitCode::from(EX_TEMPFAIL);
            };
            tracing::info!(
                action = o.decision.action.name(),
                ticket = o.ticket,
                acknowledge = o.decision.acknowledge,
                reason = %o.decision.reason,
                "message taken"
            );
            if o.decision.action.name() == "quarantine" {
                eprintln!("postdesk: quarantined: {}", o.decision.reason);
                ExitCode::from(EX_DATAERR)
            } else {
                ExitCode::SUCCESS
            }
        }
        Err(e) => {
            // Any store failure leaves the message with the MTA, which retries: nothing is lost.
            eprintln!("postdesk: try again later: {e}");
            ExitCode::from(EX_TEMPFAIL)
        }
    }
}

/// `postdesk templates check|preview` (logic in `outbound::preview`).
async fn templates(config: &Config, command: TemplatesCommand) -> anyhow::Result<ExitCode> {
    use postdesk::outbound::preview;
    match command {
        TemplatesCommand::Check { dir } => {
            let dir = dir.unwrap_or_else(|| config.templates_dir.clone());
            let code = preview::check_command(&dir, &mut std::io::stdout().lock())?;
            Ok(ExitCode::from(code))
        }
        TemplatesCommand::Preview(args) => {
            let detail = match args.ticket {
                None => None,
                Some(n) => match with_existing_store!(config, |store| {
                    store.migrate().await?;
                    store.ticket_detail(n).await
                }) {
                    Ok(d) => Some(d),
                    Err(StoreError::NotFound) => {
                        eprintln!("postdesk: no ticket #{n}");
                        return Ok(ExitCode::from(1));
                    }
                    Err(e) => return Err(e.into()),
                },
            };
            match preview::preview(config, &args, detail.as_ref()) {
                Ok(p) => {
                    print!("{}", p.printed);
                    eprintln!("wrote {} and {}", p.eml.display(), p.html.display());
                    Ok(ExitCode::SUCCESS)
                }
                Err(e) => {
                    eprintln!("postdesk: {e}");
                    Ok(ExitCode::from(preview::EXIT_BROKEN))
                }
            }
        }
    }
}

async fn tickets<S: Store>(store: &S, command: TicketsCommand) -> anyhow::Result<ExitCode> {
    match command {
        TicketsCommand::List { status, json } => {
            let list = store.list_tickets(status).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&list)?);
            } else {
                print_ticket_table(&list);
            }
            Ok(ExitCode::SUCCESS)
        }
        TicketsCommand::Show { number, json } => match store.ticket_detail(number).await {
            Ok(detail) => {
                if json {
                    println!("{}", serde_json::to_string_pretty(&detail)?);
                } else {
                    print_ticket_detail(&detail);
                }
                Ok(ExitCode::SUCCESS)
            }
            Err(StoreError::NotFound) => {
                eprintln!("postdesk: no ticket #{number}");
                Ok(ExitCode::from(1))
            }
            Err(e) => Err(e.into()),
        },
    }
}

fn print_sla(e: &postdesk::sla::explain::SlaExplanation) {
    println!(
        "Ticket #{}: Sev {} on calendar {} ({})",
        e.ticket, e.severity, e.calendar, e.zone
    );
    for d in &e.deadlines {
        let due = match (&d.due_local, d.due) {
            (Some(l), Some(u)) => format!("{l} ({})", u.to_rfc3339()),
            _ => "-".into(),
        };
        let state = match (d.met_at, d.breached) {
            (Some(m), true) => format!("met late at {}", m.to_rfc3339()),
            (Some(m), false) => format!("met at {}", m.to_rfc3339()),
            (None, true) => "BREACHED".into(),
            (None, false) => "running".into(),
        };
        println!("{:<11} {:<45} due {due}: {state}", d.kind, d.target);
        if !d.open_periods.is_empty() {
            println!(
                "            open periods counted: {}",
                d.open_periods.join("; ")
            );
        }
        if !d.holidays_skipped.is_empty() {
            println!(
                "            holidays skipped: {}",
                d.holidays_skipped.join("; ")
            );
        }
    }
    for r in &e.recomputations {
        println!("{}  {}", r.at.to_rfc3339(), r.reason);
    }
}

fn severity_cell(t: &TicketSummary) -> String {
    match (t.requested_severity, t.downgraded, t.severity_given) {
        (_, _, false) => format!("{} (not given)", t.assigned_severity),
        (Some(r), true, _) => format!("{} (asked {r})", t.assigned_severity),
        _ => t.assigned_severity.to_string(),
    }
}

fn print_ticket_table(list: &[TicketSummary]) {
    println!(
        "{:>6}  {:<16}  {:<14}  {:<28}  {:<29}  SUBJECT",
        "#", "STATUS", "SEV", "REQUESTER", "NEXT DUE (UTC)"
    );
    for t in list {
        let subject: String = t.subject.chars().take(60).collect();
        let due = t
            .next_deadline()
            .map(|(k, d)| format!("{} {k}", d.format("%Y-%m-%d %H:%M")))
            .unwrap_or_else(|| "-".into());
        println!(
            "{:>6}  {:<16}  {:<14}  {:<28}  {:<29}  {}",
            t.number,
            t.status,
            severity_cell(t),
            t.requester,
            due,
            subject
        );
    }
    println!("{} ticket(s)", list.len());
}

fn print_ticket_detail(d: &TicketDetail) {
    let t = &d.ticket;
    println!("Ticket #{}: {}", t.number, t.subject);
    println!("  status:    {}", t.status);
    println!("  severity:  Sev {}", severity_cell(t));
    println!(
        "  requester: {}{}",
        t.requester,
        t.requester_name
            .as_deref()
            .map(|n| format!(" ({n})"))
            .unwrap_or_default()
    );
    println!("  created:   {}", t.created_at.to_rfc3339());
    println!(
        "  assignee:  {}",
        t.assignee.as_deref().unwrap_or("unassigned")
    );
    if let Some(at) = t.first_response_at {
        println!("  responded: {}", at.to_rfc3339());
    }
    for (what, due) in [
        ("response", t.response_due_at),
        ("resolution", t.resolution_due_at),
        ("escalation", t.escalation_due_at),
        ("update", t.update_due_at),
    ] {
        if let Some(d) = due {
            println!("  {:<10} due {}", what, d.to_rfc3339());
        }
    }
    println!("Participants:");
    for p in &d.participants {
        println!("  {:<10} {}", p.role, p.address);
    }
    if let Some(n) = t.linked_ticket {
        println!("  continues: #{n}");
    }
    if t.requester_bounced {
        println!("  flagged:   the requester's address bounced");
    }
    // The conversation in order: inbound messages with their stored text, and the mail sent.
    println!("Conversation:");
    let mut sent = d.outbox.iter().peekable();
    for m in &d.messages {
        while let Some(o) = sent.next_if(|o| o.created_at < m.received_at) {
            print_outbound(o);
        }
        println!(
            "  {} {} {} from {} <{}> {} bytes",
            m.received_at.to_rfc3339(),
            m.kind,
            m.visibility,
            m.from,
            m.message_id,
            m.size
        );
        for line in m.text.lines() {
            println!("    | {line}");
        }
        for a in &m.attachments {
            println!(
                "    attachment: {} ({}, {} bytes{}{})",
                a.filename.as_deref().unwrap_or("(no name)"),
                a.content_type,
                a.size,
                if a.inline { ", inline" } else { "" },
                a.content_id
                    .as_deref()
                    .map(|c| format!(", cid {c}"))
                    .unwrap_or_default()
            );
        }
    }
    for o in sent {
        print_outbound(o);
    }
    println!("History:");
    for e in &d.history {
        let change = match (&e.from, &e.to) {
            (Some(f), Some(t)) => format!(" {f} -> {t}"),
            (None, Some(t)) => format!(" -> {t}"),
            _ => String::new(),
        };
        println!(
            "  {} {} {}{}: {}{}",
            e.at.to_rfc3339(),
            e.actor,
            e.kind,
            change,
            e.reason,
            e.related_ticket
                .map(|n| format!(" (see #{n})"))
                .unwrap_or_default()
        );
    }
}

fn print_outbound(o: &postdesk::store::OutboxSummary) {
    let state = match (&o.sent_at, &o.failed_at) {
        (Some(s), _) => format!("sent {}", s.to_rfc3339()),
        (None, Some(f)) => format!("failed {}", f.to_rfc3339()),
        _ => format!("pending ({} attempts)", o.attempts),
    };
    println!(
        "  {} outbound {} to {} <{}> {}",
        o.created_at.to_rfc3339(),
        o.template,
        o.to,
        o.message_id,
        state
    );
}
