//! Templates admins edit as files (SPEC: Outbound mail). Each template is a directory under the
//! template dir with `subject.txt`, `text.txt` and `html.html`. Values are escaped in the HTML
//! part (minijinja auto-escapes `.html`), the text part is not, undefined variables are errors,
//! and the subject always comes out as one line that carries the ticket tag.

use std::path::{Path, PathBuf};

use minijinja::{Environment, UndefinedBehavior};
use serde::Serialize;

use crate::desk::decide::Template;
use crate::mail::parse::one_line;

/// The parts of one template, as files in its directory.
const PARTS: [&str; 3] = ["subject.txt", "text.txt", "html.html"];

/// A template problem, with the file and line to fix.
#[derive(Debug, thiserror::Error)]
#[error("template error in {}{}: {message}", file.display(), line.map(|l| format!(":{l}")).unwrap_or_default())]
pub struct TemplateError {
    /// The file.
    pub file: PathBuf,
    /// The line, when known.
    pub line: Option<usize>,
    /// What is wrong.
    pub message: String,
}

/// One rendered mail body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rendered {
    /// The subject, one line.
    pub subject: String,
    /// The plain-text part.
    pub text: String,
    /// The HTML part.
    pub html: String,
}

/// The loaded templates.
pub struct Renderer {
    dir: PathBuf,
    env: Environment<'static>,
}

impl std::fmt::Debug for Renderer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Renderer({})", self.dir.display())
    }
}

impl Renderer {
    /// Loads and compiles every template part under `dir`, reporting the first broken one.
    pub fn load(dir: &Path) -> Result<Renderer, TemplateError> {
        let mut env = Environment::new();
        env.set_undefined_behavior(UndefinedBehavior::Strict);
        env.set_keep_trailing_newline(true);
        for template in [Template::Acknowledgement] {
            for part in PARTS {
                let name = format!("{}/{part}", template.name());
                let file = dir.join(&name);
                let source = std::fs::read_to_string(&file).map_err(|e| TemplateError {
                    file: file.clone(),
                    line: None,
                    message: format!("cannot read: {e}"),
                })?;
                env.add_template_owned(name, source)
                    .map_err(|e| template_error(dir, &e))?;
            }
        }
        Ok(Renderer {
            dir: dir.to_path_buf(),
            env,
        })
    }

    /// Renders one template with `ctx`; `tag` is forced into the subject if the template lost it.
    pub fn render<C: Serialize>(
        &self,
        template: Template,
        ctx: &C,
        tag: &str,
    ) -> Result<Rendered, TemplateError> {
        let part = |p: &str| -> Result<String, TemplateError> {
            let name = format!("{}/{p}", template.name());
            let t = self
                .env
                .get_template(&name)
                .map_err(|e| template_error(&self.dir, &e))?;
            t.render(ctx).map_err(|e| template_error(&self.dir, &e))
        };
        let mut subject = one_line(&part("subject.txt")?);
        if !subject.contains(tag) {
            subject = format!("{tag} {subject}");
        }
        Ok(Rendered {
            subject,
            text: part("text.txt")?,
            html: part("html.html")?,
        })
    }
}

fn template_error(dir: &Path, e: &minijinja::Error) -> TemplateError {
    let mut message = e.kind().to_string();
    if let Some(detail) = e.detail() {
        message.push_str(": ");
        message.push_str(detail);
    }
    TemplateError {
        file: dir.join(e.name().unwrap_or("?")),
        line: e.line(),
        message,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir_with(html: &str) -> tempfile::TempDir {
        let d = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let t = d.path().join("acknowledgement");
        std::fs::create_dir_all(&t).unwrap_or_else(|e| panic!("{e}"));
        std::fs::write(t.join("subject.txt"), "Re: {{ s }}\n").unwrap_or_else(|e| panic!("{e}"));
        std::fs::write(t.join("text.txt"), "{{ s }}").unwrap_or_else(|e| panic!("{e}"));
        std::fs::write(t.join("html.html"), html).unwrap_or_else(|e| panic!("{e}"));
        d
    }

    #[test]
    fn html_is_escaped_text_is_not_subject_is_one_line_with_tag() {
        let d = dir_with("<p>{{ s }}</p>");
        let r = Renderer::load(d.path()).unwrap_or_else(|e| panic!("{e}"));
        let ctx = serde_json::json!({"s": "<script>x</script>\r\nBcc: a@b"});
        let out = r
            .render(Template::Acknowledgement, &ctx, "[#7]")
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(out.subject, "[#7] Re: <script>x</script> Bcc: a@b");
        assert_eq!(out.text, "<script>x</script>\r\nBcc: a@b");
        assert!(out.html.contains("&lt;script&gt;"), "{}", out.html);
    }

    #[test]
    fn syntax_error_names_file_and_line() {
        let d = dir_with("<p>\n{% if %}</p>");
        let e = Renderer::load(d.path())
            .err()
            .unwrap_or_else(|| panic!("accepted"));
        assert!(e.file.ends_with("acknowledgement/html.html"), "{e}");
        assert_eq!(e.line, Some(2), "{e}");
    }

    #[test]
    fn undefined_variable_is_an_error() {
        let d = dir_with("{{ nope.deeper }}");
        let r = Renderer::load(d.path()).unwrap_or_else(|e| panic!("{e}"));
        let e = r
            .render(
                Template::Acknowledgement,
                &serde_json::json!({"s": 1}),
                "[#1]",
            )
            .err()
            .unwrap_or_else(|| panic!("rendered"));
        assert!(e.to_string().contains("html.html"), "{e}");
    }
}
