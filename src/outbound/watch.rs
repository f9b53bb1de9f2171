//! Live template reload (SPEC: Outbound mail: "Admins edit them while the worker runs; a broken
//! edit is reported with file and line and the last good version keeps serving").
//!
//! The watcher polls the template tree (every `templates.poll_interval`, 200 ms by default)
//! rather than using inotify: polling works the same on every filesystem, including network
//! mounts and bind-mounted container volumes where change events never arrive, and a tree of a
//! few dozen small files costs nothing to read. An edit is reloaded once the files have stayed
//! the same for a short settle time, so a save caught half-written is not reported as broken.
//! A failed reload logs each new error once (file, line, message), sets
//! `postdesk_templates_broken` to the number of errors and keeps the last good set serving; a
//! reminder is logged every ten minutes until the templates are fixed.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use tokio::sync::watch;

use super::templates::{LiveTemplates, Renderer, Snapshot, TemplateError};
use crate::config::Config;
use crate::metrics::{METRICS, Metrics};

/// How long files must stay unchanged before a reload (an editor's save in several writes).
const SETTLE: Duration = Duration::from_millis(50);
/// How often a still-broken template set is mentioned again in the log.
const REMIND_EVERY: Duration = Duration::from_secs(600);
/// The shortest poll interval honoured.
const MIN_POLL: Duration = Duration::from_millis(10);

/// What one look at the template tree did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PollOutcome {
    /// Nothing changed.
    Unchanged,
    /// The edit was good and serves now.
    Reloaded,
    /// The edit is broken (this many errors); the last good set keeps serving.
    Broken(usize),
}

/// Watches one template folder and swaps good edits into a [`LiveTemplates`].
#[derive(Debug)]
pub struct TemplateWatcher {
    dir: PathBuf,
    templates: LiveTemplates,
    last_seen: Snapshot,
    /// The errors of the current broken edit, each logged once.
    logged: BTreeSet<TemplateError>,
    last_reminder: Instant,
}

impl TemplateWatcher {
    /// A watcher of `dir` whose baseline is the set `templates` serves now.
    pub fn new(dir: &Path, templates: LiveTemplates) -> TemplateWatcher {
        TemplateWatcher {
            dir: dir.to_path_buf(),
            last_seen: templates.current().snapshot().clone(),
            templates,
            logged: BTreeSet::new(),
            last_reminder: Instant::now(),
        }
    }

    /// Looks at the tree once and reloads if it changed. Blocking (file IO).
    pub fn poll(&mut self) -> PollOutcome {
        let mut snap = Snapshot::read(&self.dir);
        if snap == self.last_seen {
            if !self.logged.is_empty() && self.last_reminder.elapsed() >= REMIND_EVERY {
                self.last_reminder = Instant::now();
                tracing::warn!(
                    errors = self.logged.len(),
                    dir = %self.dir.display(),
                    "templates are still broken; the last good templates keep serving (run `postdesk templates check`)"
                );
            }
            return PollOutcome::Unchanged;
        }
        for _ in 0..20 {
            std::thread::sleep(SETTLE);
            let again = Snapshot::read(&self.dir);
            if again == snap {
                break;
            }
            snap = again;
        }
        let started = Instant::now();
        let outcome = match Renderer::load_snapshot(&self.dir, &snap) {
            Ok(renderer) => {
                self.templates.replace(renderer);
                METRICS.templates_broken.store(0, Ordering::Relaxed);
                Metrics::inc(&METRICS.templates_reloads);
                if !self.logged.is_empty() {
                    tracing::info!(dir = %self.dir.display(), "template errors fixed");
                }
                self.logged.clear();
                tracing::info!(
                    dir = %self.dir.display(),
                    files = snap.len(),
                    load_ms = started.elapsed().as_millis() as u64,
                    "templates reloaded"
                );
                PollOutcome::Reloaded
            }
            Err(errors) => {
                let now: BTreeSet<TemplateError> = errors.0.iter().cloned().collect();
                for e in now.difference(&self.logged) {
                    tracing::error!(
                        file = %e.file.display(),
                        line = e.line,
                        "template error in {e}; the last good templates keep serving"
                    );
                }
                METRICS
                    .templates_broken
                    .store(now.len() as u64, Ordering::Relaxed);
                if now != self.logged {
                    tracing::warn!(
                        errors = now.len(),
                        "template edit not loaded: {} error{}; the last good templates keep serving",
                        now.len(),
                        if now.len() == 1 { "" } else { "s" }
                    );
                }
                self.logged = now;
                self.last_reminder = Instant::now();
                PollOutcome::Broken(errors.0.len())
            }
        };
        self.last_seen = snap;
        outcome
    }
}

/// Reloads `templates` from `config.templates_dir` every `templates.poll_interval` until
/// `shutdown` turns true (run under the worker's supervisor: a panic while reading the files
/// is passed on, and the watcher is started again).
pub fn template_watcher(
    templates: &LiveTemplates,
    config: &Config,
    mut shutdown: watch::Receiver<bool>,
) -> impl std::future::Future<Output = ()> + Send + 'static {
    let interval = config.templates_poll_interval.max(MIN_POLL);
    let mut watcher = TemplateWatcher::new(&config.templates_dir, templates.clone());
    tracing::info!(
        dir = %config.templates_dir.display(),
        interval_ms = interval.as_millis() as u64,
        "watching templates for edits"
    );
    async move {
        loop {
            tokio::select! {
                _ = tokio::time::sleep(interval) => {}
                _ = shutdown.changed() => {}
            }
            if *shutdown.borrow() {
                return;
            }
            // File IO off the async threads; the watcher comes back with its state.
            match tokio::task::spawn_blocking(move || {
                watcher.poll();
                watcher
            })
            .await
            {
                Ok(w) => watcher = w,
                Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
                // The runtime is shutting down: nothing went wrong.
                Err(_) => return,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::desk::decide::Template;
    use crate::outbound::sample::{default_support, sample};
    use crate::outbound::templates::Variant;

    fn copy_dir(from: &Path, to: &Path) {
        std::fs::create_dir_all(to).unwrap_or_else(|e| panic!("{e}"));
        for e in std::fs::read_dir(from).unwrap_or_else(|e| panic!("{e}")) {
            let e = e.unwrap_or_else(|e| panic!("{e}"));
            let target = to.join(e.file_name());
            if e.path().is_dir() {
                copy_dir(&e.path(), &target);
            } else {
                std::fs::copy(e.path(), target).unwrap_or_else(|e| panic!("{e}"));
            }
        }
    }

    fn subject(t: &LiveTemplates) -> String {
        let ctx = sample(Template::Acknowledgement, None, &default_support())
            .unwrap_or_else(|e| panic!("{e}"));
        t.current()
            .render(
                Template::Acknowledgement,
                &Variant::default(),
                &ctx,
                "[#42]",
            )
            .unwrap_or_else(|e| panic!("{e}"))
            .subject
    }

    #[test]
    fn good_edit_reloads_broken_edit_keeps_last_good_fix_resumes() {
        let d = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        copy_dir(
            &PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("templates"),
            d.path(),
        );
        let live = LiveTemplates::new(Renderer::load(d.path()).unwrap_or_else(|e| panic!("{e}")));
        let mut w = TemplateWatcher::new(d.path(), live.clone());
        assert_eq!(w.poll(), PollOutcome::Unchanged);
        let file = d.path().join("acknowledgement/subject.txt");

        std::fs::write(&file, "{{ ticket.tag }} Got it: {{ ticket.subject }}\n")
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(w.poll(), PollOutcome::Reloaded);
        assert!(subject(&live).contains("Got it"), "{}", subject(&live));

        std::fs::write(&file, "{{ ticket.tag }} {% if %}\n").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(w.poll(), PollOutcome::Broken(1));
        assert!(subject(&live).contains("Got it"), "last good must serve");
        assert_eq!(
            w.poll(),
            PollOutcome::Unchanged,
            "no reload of the same broken files"
        );

        std::fs::write(&file, "{{ ticket.tag }} Fixed: {{ ticket.subject }}\n")
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(w.poll(), PollOutcome::Reloaded);
        assert!(subject(&live).contains("Fixed"), "{}", subject(&live));

        std::fs::remove_file(d.path().join("acknowledgement/html.html"))
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            w.poll(),
            PollOutcome::Broken(1),
            "a missing part is an error"
        );
        assert!(subject(&live).contains("Fixed"));
    }
}
