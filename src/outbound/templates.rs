//! Templates admins edit as files (SPEC: Outbound mail).
//!
//! Each template is a folder under the template dir named after it (`acknowledgement/`, ...)
//! with `subject.txt`, `html.html` and optionally `text.txt` (made from the HTML when missing).
//! They share `_layout/` and `_partials/` through minijinja's `extends` and `include`.
//! Overrides live in the same shape under `<language>/`, `companies/<company>/` and
//! `companies/<company>/<language>/`; a name is looked up from the most specific of those to
//! the defaults, so an override holds only what it changes (see [`Variant`]).
//!
//! Safety rules: HTML parts (`.html`) are auto-escaped and text parts are not; an undefined
//! variable is an error, never an empty string; the subject comes out as one line that carries
//! the ticket tag whatever the values hold. Loading validates everything (syntax, unknown
//! variables, missing parts, and a render of every template with sample data) and reports every
//! problem with file and line; only a set without errors is ever served. [`LiveTemplates`] is the
//! cheap shared handle the pipeline renders through, so that a reload swaps in a new good set
//! between two mails and a broken edit leaves the last good set serving.

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};

use minijinja::{AutoEscape, Environment, UndefinedBehavior, Value};
use serde::Serialize;

use super::context::{COMMON, SECTIONS, optional_sections, sections};
use super::html_text::html_to_text;
use super::sample;
use crate::desk::decide::Template;

/// The parts of one template, as files in its folder.
pub const PARTS: [&str; 3] = ["subject.txt", "text.txt", "html.html"];
/// Shared folders: the layout templates extend and the partials they include.
const SHARED: [&str; 2] = ["_layout", "_partials"];
/// Folders deeper than this are not read (a symlink loop must not hang the watcher).
const MAX_DEPTH: usize = 6;
/// A template file larger than this is refused: it is a mistake, not a template.
const MAX_FILE_SIZE: u64 = 1024 * 1024;
/// Longest rendered subject, in characters: a customer's 3,000-character subject must not make
/// a header line over RFC 5322's 998-byte limit (a word without spaces cannot be folded).
pub const MAX_SUBJECT_CHARS: usize = 200;
/// Names a template may use without them being in the context.
const BUILTIN_NAMES: [&str; 6] = ["loop", "self", "super", "caller", "varargs", "kwargs"];

/// A template problem, with the file and line to fix.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, thiserror::Error)]
#[error("{}{}: {message}", file.display(), line.map(|l| format!(":{l}")).unwrap_or_default())]
pub struct TemplateError {
    /// The file.
    pub file: PathBuf,
    /// The line, when known.
    pub line: Option<usize>,
    /// What is wrong.
    pub message: String,
}

/// Every problem found while loading templates (never empty).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TemplateErrors(pub Vec<TemplateError>);

impl fmt::Display for TemplateErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.0.len();
        write!(f, "{n} template error{}:", if n == 1 { "" } else { "s" })?;
        for e in &self.0 {
            write!(f, "\n  template error in {e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for TemplateErrors {}

/// One rendered mail body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rendered {
    /// The subject, one line, with the ticket tag.
    pub subject: String,
    /// The plain-text part.
    pub text: String,
    /// The HTML part.
    pub html: String,
    /// True when the template has no `text.txt` and the text was made from the HTML.
    pub text_derived: bool,
}

/// Which overrides a mail is rendered with: the company's folder (by slug) and the language.
/// Lookup order for every file: `companies/<company>/<language>/`, `companies/<company>/`,
/// `<language>/`, then the defaults.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Variant {
    /// Company slug, when that company has overrides.
    pub company: Option<String>,
    /// Language code, when templates in it exist.
    pub language: Option<String>,
}

impl Variant {
    /// The prefix of minijinja template names rendered for this variant.
    fn prefix(&self) -> String {
        format!(
            "{}:{}:",
            self.company.as_deref().unwrap_or(""),
            self.language.as_deref().unwrap_or("")
        )
    }

    /// The override levels to look in, most specific first.
    fn chain(&self) -> Vec<Level> {
        let mut v = Vec::with_capacity(4);
        if let (Some(c), Some(l)) = (&self.company, &self.language) {
            v.push(Level {
                company: Some(c.clone()),
                language: Some(l.clone()),
            });
        }
        if let Some(c) = &self.company {
            v.push(Level {
                company: Some(c.clone()),
                language: None,
            });
        }
        if let Some(l) = &self.language {
            v.push(Level {
                company: None,
                language: Some(l.clone()),
            });
        }
        v.push(Level::default());
        v
    }

    /// `company globex-corporation, language de` for messages.
    pub fn describe(&self) -> String {
        format!(
            "company {}, language {}",
            self.company.as_deref().unwrap_or("(default)"),
            self.language.as_deref().unwrap_or("(default)")
        )
    }
}

/// One folder of overrides.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
struct Level {
    company: Option<String>,
    language: Option<String>,
}

/// The template files as read from disk at one moment: relative path (with `/`) -> contents or
/// why they could not be read. The watcher compares snapshots to notice edits.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Snapshot {
    files: BTreeMap<String, Result<Vec<u8>, String>>,
    root_error: Option<String>,
}

impl Snapshot {
    /// Reads every `.txt` and `.html` file under `dir`. Hidden files and editor leftovers
    /// (`.swp`, `~`, `#...#`) are skipped so that an editor at work does not count as an edit.
    pub fn read(dir: &Path) -> Snapshot {
        let mut s = Snapshot::default();
        match std::fs::metadata(dir) {
            Ok(m) if m.is_dir() => read_tree(dir, "", 0, &mut s.files),
            Ok(_) => s.root_error = Some("the template folder is not a folder".into()),
            Err(e) => s.root_error = Some(format!("cannot read the template folder: {e}")),
        }
        s
    }

    /// Number of template files.
    pub fn len(&self) -> usize {
        self.files.len()
    }

    /// True when no template file was found.
    pub fn is_empty(&self) -> bool {
        self.files.is_empty()
    }
}

fn read_tree(
    dir: &Path,
    rel: &str,
    depth: usize,
    out: &mut BTreeMap<String, Result<Vec<u8>, String>>,
) {
    let entries = match std::fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) => {
            out.insert(rel.to_string(), Err(format!("cannot read the folder: {e}")));
            return;
        }
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with('.') || name.starts_with('#') || name.ends_with('~') {
            continue;
        }
        let path = entry.path();
        let child = if rel.is_empty() {
            name.clone()
        } else {
            format!("{rel}/{name}")
        };
        // Follow symlinks: admins may link a shared folder in.
        let Ok(meta) = std::fs::metadata(&path) else {
            continue;
        };
        if meta.is_dir() {
            if depth < MAX_DEPTH {
                read_tree(&path, &child, depth + 1, out);
            }
        } else if name.ends_with(".txt") || name.ends_with(".html") {
            let content = if meta.len() > MAX_FILE_SIZE {
                Err(format!(
                    "{} bytes is too large for a template (limit {MAX_FILE_SIZE})",
                    meta.len()
                ))
            } else {
                std::fs::read(&path).map_err(|e| format!("cannot read: {e}"))
            };
            out.insert(child, content);
        }
    }
}

/// What a file under the template dir is.
#[derive(Debug, Clone)]
enum Kind {
    /// A part of a template.
    Part(Template),
    /// A layout or partial.
    Shared,
}

/// Where a relative path sits: its level, its name as templates refer to it
/// (`acknowledgement/html.html`, `_partials/greeting.txt`) and its kind. Err: why it is not a
/// template file (a warning: it is not used).
fn classify(rel: &str) -> Result<(Level, String, Kind), String> {
    let segs: Vec<&str> = rel.split('/').collect();
    let mut level = Level::default();
    let mut rest: &[&str] = &segs;
    if rest.first() == Some(&"companies") {
        let Some(slug) = rest.get(1) else {
            return Err("not used: a company's overrides go in companies/<company>/".into());
        };
        if !is_slug(slug) {
            return Err(format!(
                "not used: company folders are named by the company's slug, lower-case letters, digits and `-` (`Globex Corporation` is `globex-corporation`), not `{slug}`"
            ));
        }
        level.company = Some(slug.to_string());
        rest = &rest[2..];
    }
    if rest.len() == 3 && is_language(rest[0]) {
        level.language = Some(rest[0].to_ascii_lowercase());
        rest = &rest[1..];
    }
    match rest {
        [folder, file] if SHARED.contains(folder) => {
            Ok((level, format!("{folder}/{file}"), Kind::Shared))
        }
        [folder, file] => match Template::ALL.iter().find(|t| t.name() == *folder) {
            Some(&t) if PARTS.contains(file) => Ok((level, format!("{folder}/{file}"), Kind::Part(t))),
            Some(_) => Err("not used: a template folder holds subject.txt, html.html and text.txt".into()),
            None => Err(format!(
                "not used: `{folder}` is not a template name, `_layout`, `_partials`, a language code or `companies` (misspelt?)"
            )),
        },
        _ => Err("not used: template files live in <template>/, _layout/ or _partials/, optionally under <language>/ and companies/<company>/".into()),
    }
}

fn is_slug(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

/// A BCP 47-ish language tag: `de`, `pt-br`, `zh-hant` (any case).
fn is_language(s: &str) -> bool {
    let mut parts = s.split('-');
    let primary = parts.next().unwrap_or("");
    (2..=3).contains(&primary.len())
        && primary.bytes().all(|b| b.is_ascii_alphabetic())
        && parts.all(|p| (1..=8).contains(&p.len()) && p.bytes().all(|b| b.is_ascii_alphanumeric()))
}

/// A language from a `Content-Language` header or config, lower-case (`de-CH, en` -> `de-ch`).
pub fn normalise_language(s: &str) -> Option<String> {
    let first = s.split(',').next()?.trim().replace('_', "-");
    is_language(&first).then(|| first.to_ascii_lowercase())
}

/// The loaded files, by level and name.
#[derive(Debug, Default)]
struct Index {
    /// level -> name -> relative path.
    files: HashMap<Level, HashMap<String, String>>,
    /// Relative path -> source.
    sources: HashMap<String, String>,
}

impl Index {
    fn has(&self, level: &Level, name: &str) -> Option<&str> {
        self.files.get(level)?.get(name).map(String::as_str)
    }

    /// The file that serves `name` for `variant`. A template's body (`html.html` and
    /// `text.txt`) comes as a pair from the most specific level that has `html.html`, so that an
    /// override's HTML never goes out with the default's text; the subject and shared files
    /// fall back on their own.
    fn resolve(&self, variant: &Variant, name: &str) -> Option<&str> {
        let chain = variant.chain();
        if let Some((folder, part)) = name.split_once('/')
            && !SHARED.contains(&folder)
            && part != "subject.txt"
        {
            let html = format!("{folder}/html.html");
            let level = chain.iter().find(|l| self.has(l, &html).is_some())?;
            return self.has(level, name);
        }
        chain.iter().find_map(|l| self.has(l, name))
    }

    /// Resolves a minijinja template name (`<company>:<language>:<name>`).
    fn resolve_virtual(&self, virtual_name: &str) -> Option<&str> {
        let (variant, name) = split_virtual(virtual_name)?;
        self.resolve(&variant, name)
    }
}

fn split_virtual(virtual_name: &str) -> Option<(Variant, &str)> {
    let mut it = virtual_name.splitn(3, ':');
    let company = it.next()?;
    let language = it.next()?;
    let name = it.next()?;
    let opt = |s: &str| (!s.is_empty()).then(|| s.to_string());
    Some((
        Variant {
            company: opt(company),
            language: opt(language),
        },
        name,
    ))
}

/// What loading or checking found.
#[derive(Debug, Clone, Default)]
pub struct LoadReport {
    /// Problems that stop this set from serving.
    pub errors: Vec<TemplateError>,
    /// Files that are not used (misspelt folders, stray files).
    pub warnings: Vec<TemplateError>,
    /// Template files read.
    pub files: usize,
    /// Languages with overrides.
    pub languages: Vec<String>,
    /// Companies with overrides.
    pub companies: Vec<String>,
    /// Sample renders done to validate.
    pub renders: usize,
}

/// A validated, compiled set of templates.
pub struct Renderer {
    dir: PathBuf,
    env: Environment<'static>,
    index: Arc<Index>,
    companies: BTreeSet<String>,
    /// (company or none, language) pairs that have overrides.
    languages: BTreeSet<(Option<String>, String)>,
    /// Names of included and extended templates, when tracing for `preview`.
    trace: Option<Arc<Mutex<Vec<String>>>>,
    /// The files this set was built from (the watcher's baseline).
    snapshot: Snapshot,
    /// For each validated variant, the templates whose text part is a `text.txt` (the others
    /// are made from the HTML): saves resolving the override chain at every render.
    has_text: HashMap<Variant, HashSet<Template>>,
}

impl fmt::Debug for Renderer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Renderer({})", self.dir.display())
    }
}

fn environment(
    index: Option<Arc<Index>>,
    trace: Option<Arc<Mutex<Vec<String>>>>,
) -> Environment<'static> {
    let mut env = Environment::new();
    env.set_undefined_behavior(UndefinedBehavior::Strict);
    env.set_keep_trailing_newline(true);
    // A line that holds only a block tag leaves no blank line behind: text parts stay readable.
    env.set_trim_blocks(true);
    env.set_lstrip_blocks(true);
    env.set_auto_escape_callback(|name| {
        if name.ends_with(".html") {
            AutoEscape::Html
        } else {
            AutoEscape::None
        }
    });
    if let Some(index) = index {
        // `include "_partials/x.txt"` inside a template rendered for a variant resolves for the
        // same variant: the name carries the variant as a prefix.
        env.set_path_join_callback(move |name, parent| {
            // Runs at every include: plain pushes, no formatting machinery.
            let prefix_len = parent
                .bytes()
                .enumerate()
                .filter(|(_, b)| *b == b':')
                .nth(1)
                .map(|(i, _)| i + 1)
                .unwrap_or(0);
            let mut joined = String::with_capacity(prefix_len + name.len());
            joined.push_str(&parent[..prefix_len]);
            joined.push_str(name);
            if let Some(t) = &trace
                && let Ok(mut t) = t.lock()
            {
                t.push(joined.clone());
            }
            Cow::Owned(joined)
        });
        env.set_loader(move |name| {
            Ok(index
                .resolve_virtual(name)
                .and_then(|rel| index.sources.get(rel))
                .cloned())
        });
    }
    env
}

impl Renderer {
    /// Loads and validates every template under `dir`; every problem is reported.
    pub fn load(dir: &Path) -> Result<Renderer, TemplateErrors> {
        Renderer::load_snapshot(dir, &Snapshot::read(dir))
    }

    /// Loads and validates templates from a snapshot of `dir` (the watcher's reload).
    pub fn load_snapshot(dir: &Path, snapshot: &Snapshot) -> Result<Renderer, TemplateErrors> {
        match build(dir, snapshot, false) {
            (Some(r), _) => Ok(r),
            (None, report) => Err(TemplateErrors(report.errors)),
        }
    }

    /// Validates `dir` like a load, returning the renderer (with include tracing, for
    /// `preview`) when there is no error, and the full report either way.
    pub fn check(dir: &Path) -> (Option<Renderer>, LoadReport) {
        build(dir, &Snapshot::read(dir), true)
    }

    /// The template folder.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The files this set was built from.
    pub fn snapshot(&self) -> &Snapshot {
        &self.snapshot
    }

    /// Companies (slugs) that have overrides.
    pub fn companies(&self) -> impl Iterator<Item = &str> {
        self.companies.iter().map(String::as_str)
    }

    /// Chooses the overrides for a mail: the company's folder when it has one, and the first of
    /// `languages` (most preferred first: the mail's `Content-Language`, then the company's
    /// configured language) that has templates, trying `de-ch` then `de`. Otherwise the
    /// defaults.
    pub fn select(&self, company_slug: Option<&str>, languages: &[&str]) -> Variant {
        let company = company_slug
            .filter(|c| self.companies.contains(*c))
            .map(str::to_string);
        let language = languages.iter().find_map(|l| {
            let full = normalise_language(l)?;
            let primary = full.split('-').next().unwrap_or(&full).to_string();
            [full, primary]
                .into_iter()
                .find(|cand| self.has_language(company.as_deref(), cand))
        });
        Variant { company, language }
    }

    fn has_language(&self, company: Option<&str>, language: &str) -> bool {
        self.languages.contains(&(None, language.to_string()))
            || company.is_some_and(|c| {
                self.languages
                    .contains(&(Some(c.to_string()), language.to_string()))
            })
    }

    /// Renders one template for a variant; `tag` is forced into the subject if the template
    /// lost it.
    pub fn render<C: Serialize>(
        &self,
        template: Template,
        variant: &Variant,
        ctx: &C,
        tag: &str,
    ) -> Result<Rendered, TemplateError> {
        self.render_value(template, variant, &Value::from_serialize(ctx), tag)
    }

    fn render_value(
        &self,
        template: Template,
        variant: &Variant,
        ctx: &Value,
        tag: &str,
    ) -> Result<Rendered, TemplateError> {
        let prefix = variant.prefix();
        let part = |p: &str, capacity: usize| -> Result<String, TemplateError> {
            let mut name = String::with_capacity(prefix.len() + 40);
            name.push_str(&prefix);
            name.push_str(template.name());
            name.push('/');
            name.push_str(p);
            let t = self.env.get_template(&name).map_err(|e| self.error(&e))?;
            // The layout writes most of the output: start with room for it instead of growing
            // from the small child template's size hint.
            let mut out = Vec::with_capacity(capacity);
            t.render_captured_to(ctx, &mut out)
                .map_err(|e| self.error(&e))?;
            String::from_utf8(out).map_err(|e| TemplateError {
                file: self.dir.join(&name),
                line: None,
                message: format!("rendered text is not UTF-8: {e}"),
            })
        };
        let mut subject = subject_line(&part("subject.txt", 256)?);
        if subject.chars().count() > MAX_SUBJECT_CHARS {
            subject = subject.chars().take(MAX_SUBJECT_CHARS - 1).collect();
            subject.push('…');
        }
        if !subject.contains(tag) {
            // The tag is made from config (`support.tag_prefix`), which may hold anything: it is
            // made one line like the rest (found by the `templates` fuzz target).
            subject = subject_line(&format!("{tag} {subject}"));
        }
        let html = part("html.html", 8192)?;
        let has_text = match self.has_text.get(variant) {
            Some(set) => set.contains(&template),
            None => self
                .index
                .resolve(variant, &format!("{}/text.txt", template.name()))
                .is_some(),
        };
        let (text, text_derived) = if has_text {
            (part("text.txt", 4096)?, false)
        } else {
            (html_to_text(&html), true)
        };
        Ok(Rendered {
            subject,
            text,
            html,
            text_derived,
        })
    }

    /// The files a render of `template` for `variant` uses: its own parts, then the layouts and
    /// partials it included since the last call (tracing renderers from [`Renderer::check`]).
    pub fn files_used(&self, template: Template, variant: &Variant) -> Vec<String> {
        let mut out: Vec<String> = PARTS
            .iter()
            .filter_map(|p| {
                self.index
                    .resolve(variant, &format!("{}/{p}", template.name()))
            })
            .map(str::to_string)
            .collect();
        if let Some(trace) = &self.trace
            && let Ok(mut t) = trace.lock()
        {
            for name in t.drain(..) {
                if let Some(rel) = self.index.resolve_virtual(&name)
                    && !out.iter().any(|o| o == rel)
                {
                    out.push(rel.to_string());
                }
            }
        }
        out
    }

    /// A template error with the file of the innermost template that failed.
    fn error(&self, e: &minijinja::Error) -> TemplateError {
        let mut best = e;
        let mut cur = std::error::Error::source(e);
        while let Some(s) = cur {
            if let Some(me) = s.downcast_ref::<minijinja::Error>()
                && me.name().is_some()
            {
                best = me;
            }
            cur = s.source();
        }
        let file = match best.name() {
            Some(name) => match split_virtual(name) {
                Some((variant, logical)) => self
                    .index
                    .resolve(&variant, logical)
                    .map(|rel| self.dir.join(rel))
                    .unwrap_or_else(|| self.dir.join(logical)),
                None => self.dir.join(name),
            },
            None => self.dir.clone(),
        };
        TemplateError {
            file,
            line: best.line(),
            message: error_message(best),
        }
    }
}

fn error_message(e: &minijinja::Error) -> String {
    let mut message = e.kind().to_string();
    if let Some(detail) = e.detail() {
        message.push_str(": ");
        // Template names carry the variant (`"globex:de:_partials/x.txt"`): show the file name.
        match regex::Regex::new(r#""[a-z0-9-]*:[a-z0-9-]*:"#) {
            Ok(re) => message.push_str(&re.replace_all(detail, "\"")),
            Err(_) => message.push_str(detail),
        }
    } else if e.kind() == minijinja::ErrorKind::UndefinedError {
        message.push_str(": a variable or attribute this template does not get (see the README for each template's variables)");
    }
    message
}

/// The subject as it goes out: one line, and without the Unicode controls that reorder text
/// (U+202A..U+202E, U+2066..U+2069), so a customer's right-to-left override cannot make the
/// ticket tag or the words around it read differently.
pub fn subject_line(s: &str) -> String {
    // `one_line` in the same pass, since this runs for every mail.
    let mut out = String::with_capacity(s.len());
    let mut space = false;
    for c in s.chars() {
        if matches!(c, '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}') {
            continue;
        }
        if c.is_control() || c.is_whitespace() {
            space = true;
        } else {
            if space && !out.is_empty() {
                out.push(' ');
            }
            space = false;
            out.push(c);
        }
    }
    out
}

/// Reads, validates and compiles a template set. Returns the renderer only when there is no
/// error.
fn build(dir: &Path, snap: &Snapshot, trace: bool) -> (Option<Renderer>, LoadReport) {
    let mut report = LoadReport::default();
    let mut errors = Errors::default();
    if let Some(e) = &snap.root_error {
        errors.push(dir.to_path_buf(), None, e.clone());
        report.errors = errors.list;
        return (None, report);
    }
    let mut index = Index::default();
    let mut kinds: Vec<(String, Kind)> = Vec::new();
    let mut companies = BTreeSet::new();
    let mut languages = BTreeSet::new();
    for (rel, content) in &snap.files {
        let file = dir.join(rel);
        let bytes = match content {
            Ok(b) => b,
            Err(e) => {
                errors.push(file, None, e.clone());
                continue;
            }
        };
        let Ok(source) = String::from_utf8(bytes.clone()) else {
            errors.push(file, None, "not UTF-8 text: save the file as UTF-8".into());
            continue;
        };
        match classify(rel) {
            Err(why) => report.warnings.push(TemplateError {
                file,
                line: None,
                message: why,
            }),
            Ok((level, name, kind)) => {
                if let Some(c) = &level.company {
                    companies.insert(c.clone());
                }
                if let Some(l) = &level.language {
                    languages.insert((level.company.clone(), l.clone()));
                }
                index
                    .files
                    .entry(level)
                    .or_default()
                    .insert(name, rel.clone());
                index.sources.insert(rel.clone(), source);
                kinds.push((rel.clone(), kind));
            }
        }
    }
    report.files = kinds.len();

    // Missing parts: every template needs a subject and an HTML body in the defaults, and an
    // override folder with text.txt needs its own html.html.
    let mut broken_templates: HashSet<Template> = HashSet::new();
    let default_level = Level::default();
    for t in Template::ALL {
        for part in ["subject.txt", "html.html"] {
            let name = format!("{}/{part}", t.name());
            if index.has(&default_level, &name).is_none() {
                broken_templates.insert(t);
                errors.push(
                    dir.join(&name),
                    None,
                    format!("missing part: every template needs {part} in {}/ (text.txt is optional: it is made from the HTML)", t.name()),
                );
            }
        }
    }
    let mut bodies: Vec<(&Level, &String, &String)> = index
        .files
        .iter()
        .flat_map(|(level, names)| names.iter().map(move |(name, rel)| (level, name, rel)))
        .collect();
    bodies.sort();
    for (level, name, rel) in bodies {
        if let Some(folder) = name.strip_suffix("/text.txt")
            && *level != default_level
            && !SHARED.contains(&folder)
            && index.has(level, &format!("{folder}/html.html")).is_none()
        {
            if let Some(t) = Template::from_name(folder) {
                broken_templates.insert(t);
            }
            errors.push(
                dir.join(rel),
                None,
                "missing part: this folder has text.txt but no html.html; an override's body is html.html (with text.txt optional beside it)".into(),
            );
        }
    }

    // Syntax and unknown variables, file by file.
    let schema = sample::schema(&sample::default_support());
    let mut scratch = environment(None, None);
    let mut builtins: HashSet<String> = scratch.globals().map(|(k, _)| k.to_string()).collect();
    builtins.extend(BUILTIN_NAMES.iter().map(|s| s.to_string()));
    kinds.sort_by(|a, b| a.0.cmp(&b.0));
    for (rel, kind) in &kinds {
        let file = dir.join(rel);
        let source = index.sources.get(rel).cloned().unwrap_or_default();
        if let Err(e) = scratch.add_template_owned(rel.clone(), source.clone()) {
            errors.push(file, e.line(), error_message(&e));
            continue;
        }
        let Ok(t) = scratch.get_template(rel) else {
            continue;
        };
        let (allowed, who): (Vec<&str>, String) = match kind {
            Kind::Part(t) => (
                COMMON
                    .iter()
                    .chain(sections(*t))
                    .chain(optional_sections(*t))
                    .copied()
                    .collect(),
                t.name().to_string(),
            ),
            Kind::Shared => (
                COMMON.iter().chain(SECTIONS.iter()).copied().collect(),
                "a layout or partial".to_string(),
            ),
        };
        let mut vars: Vec<String> = t.undeclared_variables(true).into_iter().collect();
        vars.sort();
        for var in vars {
            if let Some(problem) = unknown_variable(&var, &allowed, &who, &schema, &builtins) {
                errors.push(file.clone(), find_line(&source, &var), problem);
            }
        }
    }

    // Render every template for every variant with its samples: runtime errors (unknown
    // filters, missing includes, wrong types) show up here, in any override.
    let index = Arc::new(index);
    let trace_log = trace.then(|| Arc::new(Mutex::new(Vec::new())));
    let renderer = Renderer {
        dir: dir.to_path_buf(),
        env: environment(Some(index.clone()), trace_log.clone()),
        index,
        companies: companies.clone(),
        languages: languages.clone(),
        trace: trace_log,
        snapshot: snap.clone(),
        has_text: HashMap::new(),
    };
    let mut variants = vec![Variant::default()];
    for (company, language) in &languages {
        variants.push(Variant {
            company: company.clone(),
            language: Some(language.clone()),
        });
    }
    for c in &companies {
        variants.push(Variant {
            company: Some(c.clone()),
            language: None,
        });
        for (lc, l) in &languages {
            if lc.is_none() {
                variants.push(Variant {
                    company: Some(c.clone()),
                    language: Some(l.clone()),
                });
            }
        }
    }
    variants.sort();
    variants.dedup();
    let mut renderer = renderer;
    for v in &variants {
        let with_text = Template::ALL
            .into_iter()
            .filter(|t| {
                renderer
                    .index
                    .resolve(v, &format!("{}/text.txt", t.name()))
                    .is_some()
            })
            .collect();
        renderer.has_text.insert(v.clone(), with_text);
    }
    let support = sample::default_support();
    for variant in &variants {
        for t in Template::ALL {
            if broken_templates.contains(&t) {
                continue;
            }
            for v in sample::variants(t) {
                let Ok(mut ctx) = sample::sample(t, Some(v), &support) else {
                    continue;
                };
                ctx.language = variant.language.clone().unwrap_or_else(|| "en".into());
                if let (Some(slug), Some(company)) = (&variant.company, &mut ctx.company) {
                    company.slug = slug.clone();
                }
                report.renders += 1;
                if let Err(e) = renderer.render(t, variant, &ctx, "[#42]") {
                    let mut detail = format!(" (rendering {t}");
                    if sample::variants(t).len() > 1 {
                        detail.push_str(&format!(", sample {v}"));
                    }
                    if *variant != Variant::default() {
                        detail.push_str(&format!(", {}", variant.describe()));
                    }
                    detail.push(')');
                    errors.push_render(e, &detail);
                }
            }
        }
    }
    if let Some(t) = &renderer.trace
        && let Ok(mut t) = t.lock()
    {
        t.clear();
    }
    report.companies = companies.into_iter().collect();
    report.languages = languages
        .into_iter()
        .map(|(c, l)| match c {
            Some(c) => format!("{l} (companies/{c})"),
            None => l,
        })
        .collect();
    report.errors = errors.list;
    if report.errors.is_empty() {
        (Some(renderer), report)
    } else {
        (None, report)
    }
}

/// Errors in the order found, one per file and line.
#[derive(Default)]
struct Errors {
    list: Vec<TemplateError>,
    seen: HashSet<(PathBuf, Option<usize>)>,
    broken_files: HashSet<PathBuf>,
}

impl Errors {
    fn push(&mut self, file: PathBuf, line: Option<usize>, message: String) {
        if self.seen.insert((file.clone(), line)) {
            self.broken_files.insert(file.clone());
            self.list.push(TemplateError {
                file,
                line,
                message,
            });
        }
    }

    /// A render error, unless its file already has an error (the first one explains it).
    fn push_render(&mut self, e: TemplateError, detail: &str) {
        if self.broken_files.contains(&e.file) && !self.seen.contains(&(e.file.clone(), e.line)) {
            return;
        }
        if self.seen.insert((e.file.clone(), e.line)) {
            self.list.push(TemplateError {
                message: format!("{}{detail}", e.message),
                ..e
            });
        }
    }
}

/// Why `var` (`ticket.nmber`) is not a variable a file may use, or None when it is.
fn unknown_variable(
    var: &str,
    allowed: &[&str],
    who: &str,
    schema: &serde_json::Value,
    builtins: &HashSet<String>,
) -> Option<String> {
    let mut segs = var.split('.');
    let top = segs.next()?;
    if builtins.contains(top) {
        return None;
    }
    if !allowed.contains(&top) {
        if SECTIONS.contains(&top) {
            let users: Vec<&str> = Template::ALL
                .iter()
                .filter(|t| sections(**t).contains(&top) || optional_sections(**t).contains(&top))
                .map(|t| t.name())
                .collect();
            return Some(format!(
                "unknown variable `{top}`: {who} does not get it (only {} {})",
                users.join(", "),
                if users.len() == 1 { "does" } else { "do" }
            ));
        }
        return Some(format!(
            "unknown variable `{top}`: {who} gets {}",
            allowed.join(", ")
        ));
    }
    let mut node = schema.get(top)?;
    let mut path = top.to_string();
    for seg in segs {
        match node {
            serde_json::Value::Object(map) => match map.get(seg) {
                Some(n) => node = n,
                None => {
                    let keys: Vec<&str> = map.keys().map(String::as_str).collect();
                    return Some(format!(
                        "unknown variable `{var}`: `{path}` has no `{seg}` (it has {})",
                        keys.join(", ")
                    ));
                }
            },
            // Lists are reached through loop variables; null is an unset option.
            serde_json::Value::Array(_) | serde_json::Value::Null => return None,
            _ => {
                return Some(format!(
                    "unknown variable `{var}`: `{path}` is a plain value without attributes"
                ));
            }
        }
        path.push('.');
        path.push_str(seg);
    }
    None
}

/// The first line where `var` is used inside a `{{ }}` or `{% %}` tag.
fn find_line(source: &str, var: &str) -> Option<usize> {
    let pattern = var
        .split('.')
        .map(regex::escape)
        .collect::<Vec<_>>()
        .join(r"\s*\.\s*");
    let var_re = regex::Regex::new(&format!(r"(?:^|[^\w.]){pattern}\b")).ok()?;
    let tag_re = regex::Regex::new(r"(?s)\{\{.*?\}\}|\{%.*?%\}").ok()?;
    tag_re.find_iter(source).find_map(|tag| {
        var_re
            .find(tag.as_str())
            .map(|m| source[..tag.start() + m.start()].matches('\n').count() + 1)
    })
}

/// The templates the pipeline renders with: a shared handle to the current good set that the
/// watcher replaces after a successful reload. Cloning is cheap; rendering takes the set that
/// is current at that moment and keeps it for the whole mail.
#[derive(Debug, Clone)]
pub struct LiveTemplates {
    current: Arc<RwLock<Arc<Renderer>>>,
}

impl LiveTemplates {
    /// A handle serving `renderer`.
    pub fn new(renderer: Renderer) -> LiveTemplates {
        LiveTemplates {
            current: Arc::new(RwLock::new(Arc::new(renderer))),
        }
    }

    /// The set serving now.
    pub fn current(&self) -> Arc<Renderer> {
        match self.current.read() {
            Ok(g) => g.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// Serves `renderer` from now on.
    pub fn replace(&self, renderer: Renderer) {
        let new = Arc::new(renderer);
        match self.current.write() {
            Ok(mut g) => *g = new,
            Err(poisoned) => *poisoned.into_inner() = new,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::outbound::sample::{default_support, sample};

    fn repo_templates() -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("templates")
    }

    /// A copy of the shipped templates in a temp dir, to break.
    fn copy() -> tempfile::TempDir {
        let d = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        copy_dir(&repo_templates(), d.path());
        d
    }

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

    fn write(dir: &Path, rel: &str, text: &str) {
        let p = dir.join(rel);
        std::fs::create_dir_all(p.parent().unwrap_or(dir)).unwrap_or_else(|e| panic!("{e}"));
        std::fs::write(p, text).unwrap_or_else(|e| panic!("{e}"));
    }

    fn errors(dir: &Path) -> Vec<TemplateError> {
        match Renderer::load(dir) {
            Ok(_) => Vec::new(),
            Err(e) => e.0,
        }
    }

    fn ack(r: &Renderer, variant: &Variant, sample_variant: &str) -> Rendered {
        let ctx = sample(
            Template::Acknowledgement,
            Some(sample_variant),
            &default_support(),
        )
        .unwrap_or_else(|e| panic!("{e}"));
        r.render(Template::Acknowledgement, variant, &ctx, "[#42]")
            .unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn shipped_templates_load() {
        let (r, report) = Renderer::check(&repo_templates());
        assert!(report.errors.is_empty(), "{:#?}", report.errors);
        assert!(report.warnings.is_empty(), "{:#?}", report.warnings);
        assert!(r.is_some());
        assert!(
            report.renders >= 2 * Template::ALL.len(),
            "{}",
            report.renders
        );
    }

    #[test]
    fn html_is_escaped_text_is_not_subject_is_one_line_with_tag() {
        let d = copy();
        write(
            d.path(),
            "acknowledgement/subject.txt",
            "Re: {{ ticket.subject }}\n",
        );
        let r = Renderer::load(d.path()).unwrap_or_else(|e| panic!("{e}"));
        let mut ctx = sample(Template::Acknowledgement, None, &default_support())
            .unwrap_or_else(|e| panic!("{e}"));
        ctx.ticket.subject = "<script>x</script>\r\nBcc: a@b \u{202e}gnp.exe".into();
        let out = r
            .render(Template::Acknowledgement, &Variant::default(), &ctx, "[#7]")
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(out.subject, "[#7] Re: <script>x</script> Bcc: a@b gnp.exe");
        // A tag prefix with a line break (config) cannot break the subject either.
        let forced = r
            .render(
                Template::Acknowledgement,
                &Variant::default(),
                &ctx,
                "[#\r\n7]",
            )
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            forced.subject,
            "[# 7] Re: <script>x</script> Bcc: a@b gnp.exe"
        );
        assert!(out.text.contains("<script>x</script>"), "{}", out.text);
        assert!(out.html.contains("&lt;script&gt;"), "{}", out.html);
        assert!(!out.html.contains("<script>"), "{}", out.html);
    }

    #[test]
    fn every_error_is_reported_with_file_and_line() {
        let d = copy();
        write(d.path(), "acknowledgement/html.html", "<p>\n{% if %}</p>");
        write(
            d.path(),
            "closed/text.txt",
            "line one\n{{ ticket.nmber }}\n",
        );
        write(d.path(), "relay/subject.txt", "{{ rejection.help }}\n");
        write(
            d.path(),
            "_partials/signature.txt",
            "a\nb\n{{ support.name | no_such_filter }}\n",
        );
        std::fs::remove_file(d.path().join("breach/html.html")).unwrap_or_else(|e| panic!("{e}"));
        let errs = errors(d.path());
        let find = |suffix: &str| {
            errs.iter()
                .find(|e| e.file.ends_with(suffix))
                .unwrap_or_else(|| panic!("no error for {suffix} in {errs:#?}"))
        };
        let e = find("acknowledgement/html.html");
        assert_eq!(e.line, Some(2), "{e}");
        assert!(e.message.contains("syntax error"), "{e}");
        let e = find("closed/text.txt");
        assert_eq!(e.line, Some(2), "{e}");
        assert!(
            e.message.contains("ticket.nmber") && e.message.contains("number"),
            "{e}"
        );
        let e = find("relay/subject.txt");
        assert_eq!(e.line, Some(1), "{e}");
        assert!(e.message.contains("does not get"), "{e}");
        let e = find("_partials/signature.txt");
        assert_eq!(e.line, Some(3), "{e}");
        assert!(e.message.contains("no_such_filter"), "{e}");
        let e = find("breach/html.html");
        assert!(e.message.contains("missing part"), "{e}");
        assert_eq!(errs.len(), 5, "{errs:#?}");
    }

    #[test]
    fn html_only_override_gets_text_made_from_it() {
        let d = copy();
        write(
            d.path(),
            "companies/globex-corporation/acknowledgement/html.html",
            "<p>Dear {{ requester.display }},</p><p>ticket <a href=\"https://help.example.com/t/{{ ticket.number }}\">{{ ticket.tag }}</a> is open.</p>",
        );
        let r = Renderer::load(d.path()).unwrap_or_else(|e| panic!("{e}"));
        let v = r.select(Some("globex-corporation"), &[]);
        assert_eq!(v.company.as_deref(), Some("globex-corporation"));
        let out = ack(&r, &v, "given");
        assert!(out.text_derived);
        assert_eq!(
            out.text,
            "Dear Raj Patel,\n\nticket [#42] <https://help.example.com/t/42> is open.\n"
        );
        // The subject still comes from the defaults.
        assert!(out.subject.starts_with("[#42] "), "{}", out.subject);
        // Other companies keep the defaults.
        let other = ack(&r, &r.select(Some("initech"), &[]), "given");
        assert!(!other.text_derived);
    }

    #[test]
    fn language_is_chosen_from_mail_then_company_then_default() {
        let r = Renderer::load(&repo_templates()).unwrap_or_else(|e| panic!("{e}"));
        let lang = |langs: &[&str]| r.select(None, langs).language;
        assert_eq!(lang(&["de-DE"]), Some("de".into()));
        assert_eq!(lang(&["DE"]), Some("de".into()));
        assert_eq!(lang(&["fr", "de"]), Some("de".into()));
        assert_eq!(lang(&["en", "de"]), Some("de".into()));
        assert_eq!(lang(&["fr"]), None);
        assert_eq!(lang(&["not a language"]), None);
        let de = ack(&r, &r.select(None, &["de"]), "downgraded");
        assert!(de.text.contains("telefonisch"), "{}", de.text);
        let en = ack(&r, &Variant::default(), "downgraded");
        assert!(en.text.contains("cannot be opened by email"), "{}", en.text);
    }

    #[test]
    fn override_lookup_order() {
        let d = copy();
        for (rel, word) in [
            ("companies/acme/de/_partials/greeting.txt", "acme-de"),
            ("companies/acme/_partials/greeting.txt", "acme"),
            ("de/_partials/greeting.txt", "de"),
            ("_partials/greeting.txt", "default"),
        ] {
            write(d.path(), rel, &format!("GREETING {word}\n"));
        }
        let r = Renderer::load(d.path()).unwrap_or_else(|e| panic!("{e}"));
        for (company, langs, want) in [
            (Some("acme"), &["de"][..], "GREETING acme-de"),
            (Some("acme"), &[][..], "GREETING acme"),
            (None, &["de"][..], "GREETING de"),
            (Some("other"), &["de"][..], "GREETING de"),
            (None, &[][..], "GREETING default"),
        ] {
            let out = ack(&r, &r.select(company, langs), "given");
            assert!(
                out.text.contains(want),
                "{company:?} {langs:?}: {}",
                out.text
            );
        }
    }

    #[test]
    fn stray_files_are_warnings_not_errors() {
        let d = copy();
        write(d.path(), "acknowledgment/html.html", "<p>typo</p>");
        write(d.path(), "acknowledgement/notes.txt", "todo");
        write(
            d.path(),
            "companies/Big Corp/acknowledgement/html.html",
            "x",
        );
        write(d.path(), "acknowledgement/.html.html.swp", "junk");
        let (r, report) = Renderer::check(d.path());
        assert!(r.is_some(), "{:#?}", report.errors);
        let files: Vec<String> = report
            .warnings
            .iter()
            .map(|w| w.file.display().to_string())
            .collect();
        assert_eq!(report.warnings.len(), 3, "{files:#?}");
    }

    #[test]
    fn text_without_html_in_an_override_is_a_missing_part() {
        let d = copy();
        write(d.path(), "de/closed/text.txt", "Geschlossen\n");
        let errs = errors(d.path());
        assert_eq!(errs.len(), 1, "{errs:#?}");
        assert!(errs[0].file.ends_with("de/closed/text.txt"));
        assert!(errs[0].message.contains("missing part"));
    }

    fn render_sample(r: &Renderer, t: Template, v: &str) -> Rendered {
        let ctx = sample(t, Some(v), &default_support()).unwrap_or_else(|e| panic!("{e}"));
        r.render(t, &Variant::default(), &ctx, "[#42]")
            .unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn relay_keeps_the_engineers_formatting_and_never_their_address() {
        let r = Renderer::load(&repo_templates()).unwrap_or_else(|e| panic!("{e}"));
        let html = render_sample(&r, Template::Relay, "html");
        assert!(
            html.html.contains("<strong>raised it</strong>"),
            "{}",
            html.html
        );
        assert!(
            html.html.contains("src=\"cid:rows-chart.1@example.com\""),
            "{}",
            html.html
        );
        let plain = render_sample(&r, Template::Relay, "text_only");
        assert!(
            plain.html.contains("white-space: pre-wrap"),
            "{}",
            plain.html
        );
        for out in [&html, &plain] {
            for part in [&out.subject, &out.text, &out.html] {
                assert!(!part.contains("sam@example.com"), "{part}");
            }
            assert!(out.text.contains("Sam Engineer"), "{}", out.text);
        }
        // Without HTML the engineer's text is escaped like any value.
        let mut ctx = sample(Template::Relay, Some("text_only"), &default_support())
            .unwrap_or_else(|e| panic!("{e}"));
        if let Some(m) = ctx.message.as_mut() {
            m.text = "<b>bold</b> & <script>x</script>".into();
            m.author.name = Some("<i>Sam</i>".into());
        }
        let out = r
            .render(Template::Relay, &Variant::default(), &ctx, "[#42]")
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(
            out.html.contains("&lt;b&gt;bold&lt;&#x2f;b&gt; &amp;"),
            "{}",
            out.html
        );
        assert!(out.html.contains("&lt;i&gt;Sam"), "{}", out.html);
        assert!(!out.html.contains("<script>"), "{}", out.html);
    }

    #[test]
    fn engineer_notification_lists_attached_and_stored_attachments() {
        let r = Renderer::load(&repo_templates()).unwrap_or_else(|e| panic!("{e}"));
        let out = render_sample(&r, Template::EngineerNotification, "customer_reply");
        assert!(
            out.text.contains("export-job.log (47 KB), attached"),
            "{}",
            out.text
        );
        assert!(
            out.text.contains(
                "invoices-full-export.csv (23 MB), stored on the ticket, over the 10 MB limit"
            ),
            "{}",
            out.text
        );
        assert!(
            out.text.contains("Assignee:   Sam Engineer"),
            "{}",
            out.text
        );
        assert!(
            out.text.contains("Sev 3 assigned; Sev 3 requested"),
            "{}",
            out.text
        );
        let new = render_sample(&r, Template::EngineerNotification, "new_ticket");
        assert!(new.text.contains("Assignee:   unassigned"), "{}", new.text);
        assert!(!new.text.contains("Attachments:"), "{}", new.text);
        let resolved = render_sample(&r, Template::EngineerNotification, "resolved");
        assert!(
            resolved.text.contains("solved by Sam Engineer"),
            "{}",
            resolved.text
        );
        assert!(!resolved.text.contains("Message of"), "{}", resolved.text);
        // A customer's file name is escaped in HTML.
        let mut ctx = sample(
            Template::EngineerNotification,
            Some("customer_reply"),
            &default_support(),
        )
        .unwrap_or_else(|e| panic!("{e}"));
        if let Some(a) = ctx.message.as_mut().and_then(|m| m.attachments.first_mut()) {
            a.filename = "<img src=x onerror=alert(1)>.log".into();
        }
        let out = r
            .render(
                Template::EngineerNotification,
                &Variant::default(),
                &ctx,
                "[#42]",
            )
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(!out.html.contains("<img src=x"), "{}", out.html);
        assert!(out.html.contains("&lt;img src=x"), "{}", out.html);
    }

    #[test]
    fn delivery_failure_copes_without_a_ticket() {
        let r = Renderer::load(&repo_templates()).unwrap_or_else(|e| panic!("{e}"));
        let mut ctx = sample(
            Template::DeliveryFailure,
            Some("undeliverable"),
            &default_support(),
        )
        .unwrap_or_else(|e| panic!("{e}"));
        ctx.ticket = super::super::context::TicketView::none(
            sample::sample_now(),
            super::super::context::DEFAULT_ZONE,
        );
        let out = r
            .render(Template::DeliveryFailure, &Variant::default(), &ctx, "")
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            out.subject,
            "Delivery failed: relay to raj.patel@globex.test"
        );
        for part in [&out.text, &out.html] {
            assert!(!part.contains("[#"), "{part}");
            assert!(!part.contains("Ticket"), "{part}");
            assert!(part.contains("concerns no ticket"), "{part}");
        }
        let with = render_sample(&r, Template::DeliveryFailure, "undeliverable");
        assert!(
            with.text.contains("The customer has not received it"),
            "{}",
            with.text
        );
        let bounced = render_sample(&r, Template::DeliveryFailure, "requester_bounced");
        assert!(
            bounced
                .subject
                .starts_with("[#42] Requester's address bounces"),
            "{}",
            bounced.subject
        );
        assert!(
            bounced.text.contains("ticket [#42]\nis flagged"),
            "{}",
            bounced.text
        );
    }

    #[test]
    fn optional_sections_must_be_tested_and_nested_names_are_checked() {
        let d = copy();
        // `message` is optional in close_pending: used without `{% if message %}`, the render of
        // the sample without a message fails.
        write(
            d.path(),
            "close_pending/text.txt",
            "{{ status_change.reason }}\n{{ message.text }}\n",
        );
        // A typo below an option that most samples leave none is still an unknown variable.
        write(
            d.path(),
            "engineer_notification/subject.txt",
            "{{ ticket.assignee.nme }}\n",
        );
        write(d.path(), "relay/subject.txt", "{{ failure.kind }}\n");
        let errs = errors(d.path());
        assert_eq!(errs.len(), 3, "{errs:#?}");
        assert!(
            errs.iter()
                .any(|e| e.file.ends_with("close_pending/text.txt")
                    && e.line == Some(2)
                    && e.message.contains("sample plain")),
            "{errs:#?}"
        );
        assert!(
            errs.iter()
                .any(|e| e.file.ends_with("engineer_notification/subject.txt")
                    && e.message.contains("`ticket.assignee` has no `nme`")),
            "{errs:#?}"
        );
        assert!(
            errs.iter().any(|e| e.file.ends_with("relay/subject.txt")
                && e.message.contains("only delivery_failure does")),
            "{errs:#?}"
        );
    }

    #[test]
    fn find_line_looks_inside_tags_only() {
        let src = "ticket.nmber in text\n{{ a }}\n{% if x %}{{ ticket . nmber }}{% endif %}";
        assert_eq!(find_line(src, "ticket.nmber"), Some(3));
        assert_eq!(find_line(src, "nope"), None);
    }

    #[test]
    fn languages_normalise() {
        assert_eq!(normalise_language(" de-CH, en"), Some("de-ch".into()));
        assert_eq!(normalise_language("pt_BR"), Some("pt-br".into()));
        assert_eq!(normalise_language("english"), None);
        assert_eq!(normalise_language(""), None);
    }
}
