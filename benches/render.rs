//! Template rendering (issue: templates admins edit). Two figures:
//! - renders per second of the acknowledgement, subject + text + HTML, on one core (target
//!   50,000/s), as the pipeline does it: the current set from the live handle, the context
//!   serialised, layout and partials included;
//! - time from saving a template to it serving, through the real watcher (target < 1 s).
//!
//! `cargo bench --bench render`

use std::hint::black_box;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group};
use postdesk::desk::decide::Template;
use postdesk::outbound::sample::{default_support, sample};
use postdesk::outbound::templates::{LiveTemplates, Renderer, Variant};

fn templates_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("templates")
}

fn bench(c: &mut Criterion) {
    let renderer = match Renderer::load(&templates_dir()) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("templates do not load: {e}");
            return;
        }
    };
    let live = LiveTemplates::new(renderer);
    let de = live.current().select(None, &["de"]);
    let mut group = c.benchmark_group("render_acknowledgement");
    group.throughput(Throughput::Elements(1));
    for (name, variant, sample_variant) in [
        ("en_given", Variant::default(), "given"),
        ("en_downgraded", Variant::default(), "downgraded"),
        ("de_downgraded", de, "downgraded"),
    ] {
        let Ok(ctx) = sample(
            Template::Acknowledgement,
            Some(sample_variant),
            &default_support(),
        ) else {
            continue;
        };
        group.bench_function(name, |b| {
            b.iter(|| {
                let r = live.current();
                black_box(r.render(
                    Template::Acknowledgement,
                    &variant,
                    black_box(&ctx),
                    "[#42]",
                ))
            })
        });
    }
    group.finish();
}

/// Plain throughput: acknowledgements (subject + text + HTML) rendered back to back for a few
/// seconds on this thread, the way the pipeline renders them (context serialised each time).
fn renders_per_second(seconds: u64) {
    let Ok(renderer) = Renderer::load(&templates_dir()) else {
        return;
    };
    let live = LiveTemplates::new(renderer);
    let Ok(ctx) = sample(Template::Acknowledgement, Some("given"), &default_support()) else {
        return;
    };
    let variant = Variant::default();
    let started = Instant::now();
    let cpu_started = thread_cpu_time();
    let mut n = 0u64;
    while started.elapsed() < Duration::from_secs(seconds) {
        for _ in 0..1000 {
            let r = live.current();
            black_box(r.render(
                Template::Acknowledgement,
                &variant,
                black_box(&ctx),
                "[#42]",
            ))
            .ok();
        }
        n += 1000;
    }
    let secs = started.elapsed().as_secs_f64();
    let cpu = (thread_cpu_time() - cpu_started).as_secs_f64();
    println!(
        "renders_per_second: {n} acknowledgements (subject + text + HTML) in {secs:.2} s wall = {:.0}/s; \
         {cpu:.2} s on the CPU = {:.0}/s ({:.2} µs each)",
        n as f64 / secs,
        n as f64 / cpu,
        cpu * 1e6 / n as f64
    );
}

/// CPU time of this thread: on a shared machine, wall time also counts the time other
/// processes had the core.
fn thread_cpu_time() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec we own.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    if rc != 0 {
        return Duration::ZERO;
    }
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// Saves the acknowledgement's subject `edits` times and waits for each edit to serve.
fn save_to_live(edits: usize) {
    let Ok(dir) = tempfile::tempdir() else {
        return;
    };
    if copy_dir(&templates_dir(), dir.path()).is_err() {
        return;
    }
    let env = [(
        "POSTDESK_TEMPLATES_DIR".to_string(),
        dir.path().display().to_string(),
    )]
    .into();
    let (Ok(config), Ok(renderer)) = (
        postdesk::config::Config::load_with_env(None, &env),
        Renderer::load(dir.path()),
    ) else {
        eprintln!("save_to_live: cannot load config or templates");
        return;
    };
    let live = LiveTemplates::new(renderer);
    let Ok(rt) = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
    else {
        return;
    };
    let (tx, rx) = tokio::sync::watch::channel(false);
    let _guard = rt.enter();
    let _watcher = rt.spawn(postdesk::outbound::watch::template_watcher(
        &live, &config, rx,
    ));
    let Ok(ctx) = sample(Template::Acknowledgement, None, &default_support()) else {
        return;
    };
    let file = dir.path().join("acknowledgement/subject.txt");
    let mut times = Vec::with_capacity(edits);
    for i in 0..edits {
        std::thread::sleep(Duration::from_millis(137));
        let marker = format!("edit-{i}");
        if std::fs::write(&file, format!("{{{{ ticket.tag }}}} {marker}\n")).is_err() {
            return;
        }
        let saved = Instant::now();
        while !live
            .current()
            .render(
                Template::Acknowledgement,
                &Variant::default(),
                &ctx,
                "[#42]",
            )
            .is_ok_and(|r| r.subject.contains(&marker))
        {
            if saved.elapsed() > Duration::from_secs(10) {
                eprintln!("save_to_live: edit {i} not live after 10 s");
                return;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        times.push(saved.elapsed());
    }
    let _ = tx.send(true);
    times.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    let mean = times.iter().map(|d| ms(*d)).sum::<f64>() / times.len() as f64;
    println!(
        "save_to_live: {} edits, templates.poll_interval 200ms: min {:.0} ms, median {:.0} ms, mean {:.0} ms, p95 {:.0} ms, max {:.0} ms",
        times.len(),
        ms(times[0]),
        ms(times[times.len() / 2]),
        mean,
        ms(times[times.len() * 95 / 100]),
        ms(times[times.len() - 1]),
    );
}

fn copy_dir(from: &std::path::Path, to: &std::path::Path) -> std::io::Result<()> {
    std::fs::create_dir_all(to)?;
    for e in std::fs::read_dir(from)? {
        let e = e?;
        let target = to.join(e.file_name());
        if e.file_type()?.is_dir() {
            copy_dir(&e.path(), &target)?;
        } else {
            std::fs::copy(e.path(), target)?;
        }
    }
    Ok(())
}

criterion_group!(benches, bench);

fn main() {
    benches();
    // `cargo bench -- <filter>` and `cargo test --benches` run this too; keep it short there.
    let quick = std::env::args().any(|a| a == "--test" || a == "--list");
    if !quick {
        renders_per_second(5);
        save_to_live(50);
    }
    Criterion::default().configure_from_args().final_summary();
}
