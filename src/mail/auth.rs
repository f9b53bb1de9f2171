//! Whether a mail's From is authenticated, as far as the receiving MTA's `Authentication-Results`
//! header says (SPEC: Engineers by mail, `staff.require_authenticated`). Pure: no DNS, no clock.
//!
//! Anyone can write an `Authentication-Results` header into a mail before sending it, so only
//! the one added by our own receiving host counts: the top-most header whose authserv-id is the
//! configured `staff.authserv_id`. Headers of other hosts are ignored, and so are further headers
//! with our authserv-id below that one: RFC 8601 section 5 asks the receiving host to delete
//! such headers, and one that survived was written by the sender. The header syntax is
//! RFC 8601 section 2.2 (comments, quoted strings, versions, `none`).
//!
//! A result counts only when it is aligned with the From domain the relaxed DMARC way (RFC 7489
//! 3.1): the authenticated domain is the From domain or a parent of it. `dkim.rs` verifies
//! signatures itself when the header says nothing; both answer with a [`Verdict`].

/// Whether a mail claiming a From domain is authenticated, and the words for the history.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// The From domain is authenticated: a DKIM signature (or an SPF check of the envelope
    /// sender) passed for the From domain or a parent of it. A staff From may be honoured.
    Pass {
        /// `"dkim"` or `"spf"`.
        method: String,
        /// What passed and who said so, e.g.
        /// `dkim=pass header.d=example.com (Authentication-Results of mx.example.com)`.
        detail: String,
    },
    /// Nothing shows the From domain is authenticated (no header of ours, a failed, missing or
    /// unaligned result, a broken signature, a key that could not be fetched). The sender is
    /// then not taken for staff; `why` says so in words for the ticket history.
    Fail {
        /// e.g. `no Authentication-Results from mx.example.com`.
        why: String,
    },
}

impl Verdict {
    /// True for [`Verdict::Pass`].
    pub fn is_pass(&self) -> bool {
        matches!(self, Verdict::Pass { .. })
    }
}

/// The most results of one header listed in a failure's words.
const MAX_LISTED_RESULTS: usize = 6;

/// Reads the `Authentication-Results` values of a mail (top-most first, as
/// `InboundMail::authentication_results` holds them) and says whether the header of
/// `authserv_id` shows a DKIM pass aligned with `from_domain`, or else an aligned SPF pass.
pub fn from_authentication_results(
    values: &[String],
    authserv_id: &str,
    from_domain: &str,
) -> Verdict {
    let authserv_id = authserv_id.trim();
    let Some(header) = values
        .iter()
        .filter_map(|value| AuthResults::parse(value))
        .find(|header| header.authserv_id.eq_ignore_ascii_case(authserv_id))
    else {
        return Verdict::Fail {
            why: format!("no Authentication-Results from {authserv_id}"),
        };
    };
    let of = format!("Authentication-Results of {authserv_id}");

    let dkim_pass = header.results.iter().find_map(|r| {
        let domain = r.dkim_domain()?;
        (r.method == "dkim" && r.result == "pass" && aligned(&domain, from_domain))
            .then(|| format!("dkim=pass header.d={domain} ({of})"))
    });
    if let Some(detail) = dkim_pass {
        return Verdict::Pass {
            method: "dkim".into(),
            detail,
        };
    }
    let spf_pass = header.results.iter().find_map(|r| {
        let mailfrom = r.property("smtp.mailfrom")?;
        let domain = domain_of(mailfrom);
        (r.method == "spf" && r.result == "pass" && aligned(domain, from_domain))
            .then(|| format!("spf=pass smtp.mailfrom={mailfrom} ({of})"))
    });
    if let Some(detail) = spf_pass {
        return Verdict::Pass {
            method: "spf".into(),
            detail,
        };
    }

    let shown: Vec<String> = header
        .results
        .iter()
        .take(MAX_LISTED_RESULTS)
        .map(Resinfo::summary)
        .collect();
    let shown = if shown.is_empty() {
        "none".to_string()
    } else {
        shown.join(", ")
    };
    Verdict::Fail {
        why: format!("{of} shows no DKIM or SPF pass aligned with {from_domain}: {shown}"),
    }
}

/// True when `authenticated` is `from_domain` or a parent domain of it (relaxed alignment),
/// compared without case and trailing dots. A single label (`com`) never aligns: without a
/// public suffix list this at least keeps a top-level domain from vouching for everything.
pub fn aligned(authenticated: &str, from_domain: &str) -> bool {
    let a = authenticated
        .trim()
        .trim_end_matches('.')
        .to_ascii_lowercase();
    let f = from_domain
        .trim()
        .trim_end_matches('.')
        .to_ascii_lowercase();
    if a.is_empty() || !a.contains('.') || a.starts_with('.') {
        return false;
    }
    f == a || f.strip_suffix(&a).is_some_and(|rest| rest.ends_with('.'))
}

/// The domain of `user@domain`, `@domain`, `<user@domain>` or a bare `domain`.
fn domain_of(address: &str) -> &str {
    let address = address.trim_matches(|c| c == '<' || c == '>');
    address.rsplit('@').next().unwrap_or_default()
}

/// One parsed `Authentication-Results` value.
#[derive(Debug, PartialEq, Eq)]
struct AuthResults {
    authserv_id: String,
    results: Vec<Resinfo>,
}

/// One `method=result` with its properties (`header.d`, `smtp.mailfrom`, ...).
#[derive(Debug, PartialEq, Eq)]
struct Resinfo {
    /// Lower-cased, without a `/version`.
    method: String,
    /// Lower-cased.
    result: String,
    /// Keys lower-cased (`header.d`), values as written.
    properties: Vec<(String, String)>,
}

impl Resinfo {
    fn property(&self, key: &str) -> Option<&str> {
        self.properties
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// The signing domain of a DKIM result: `header.d`, else the domain of `header.i`.
    fn dkim_domain(&self) -> Option<String> {
        if let Some(d) = self.property("header.d") {
            return Some(d.to_string());
        }
        let i = self.property("header.i")?;
        i.contains('@').then(|| domain_of(i).to_string())
    }

    fn summary(&self) -> String {
        let about = match self.method.as_str() {
            "dkim" => self.dkim_domain().map(|d| format!(" header.d={d}")),
            "spf" => self
                .property("smtp.mailfrom")
                .map(|m| format!(" smtp.mailfrom={m}")),
            _ => None,
        };
        format!(
            "{}={}{}",
            self.method,
            self.result,
            about.unwrap_or_default()
        )
    }
}

/// A lexical unit of RFC 8601 after comments and folding whitespace are dropped.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Token {
    /// A run of characters without whitespace, `;`, `=`, `(`, `)` or `"`.
    Word(String),
    /// The content of a quoted string, escapes resolved.
    Quoted(String),
    Semicolon,
    Equals,
}

/// Splits a header value into tokens. Comments (nested, with `\` escapes) vanish; an
/// unterminated comment or quoted string runs to the end of the value rather than failing.
fn tokens(value: &str) -> Vec<Token> {
    let mut out = Vec::new();
    let mut chars = value.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '(' => {
                let mut depth = 1;
                while depth > 0 {
                    match chars.next() {
                        Some('\\') => {
                            chars.next();
                        }
                        Some('(') => depth += 1,
                        Some(')') => depth -= 1,
                        Some(_) => {}
                        None => break,
                    }
                }
            }
            '"' => {
                let mut s = String::new();
                loop {
                    match chars.next() {
                        Some('\\') => s.extend(chars.next()),
                        Some('"') | None => break,
                        Some(c) => s.push(c),
                    }
                }
                out.push(Token::Quoted(s));
            }
            ';' => out.push(Token::Semicolon),
            '=' => out.push(Token::Equals),
            ')' => {}
            c if c.is_whitespace() => {}
            c => {
                let mut s = String::from(c);
                while let Some(&n) = chars.peek() {
                    if n.is_whitespace() || matches!(n, ';' | '=' | '(' | ')' | '"') {
                        break;
                    }
                    s.push(n);
                    chars.next();
                }
                out.push(Token::Word(s));
            }
        }
    }
    out
}

impl AuthResults {
    /// Parses one header value; `None` when it has no authserv-id at all.
    fn parse(value: &str) -> Option<AuthResults> {
        let tokens = tokens(value);
        let mut segments = tokens.split(|t| *t == Token::Semicolon);
        // The first segment is the authserv-id, optionally followed by a version number.
        let authserv_id = match segments.next()?.first()? {
            Token::Word(w) | Token::Quoted(w) => w.clone(),
            _ => return None,
        };
        let results = segments.filter_map(Resinfo::parse).collect();
        Some(AuthResults {
            authserv_id,
            results,
        })
    }
}

impl Resinfo {
    /// Parses the tokens between two `;`: `method[/version]=result` then `key=value` pairs
    /// (`reason=`, `header.d=`, `smtp.mailfrom=`, ...). `none` and anything without a `=`
    /// give `None`.
    fn parse(tokens: &[Token]) -> Option<Resinfo> {
        let mut pairs = Vec::new();
        let mut key = String::new();
        let mut iter = tokens.iter();
        while let Some(token) = iter.next() {
            match token {
                // A key is the last word before `=`, rejoined when CFWS split it at its dot
                // (`header . d`); earlier words are the rest of an unquoted multi-word value.
                Token::Word(w) | Token::Quoted(w) => {
                    if !(key.ends_with('.') || w.starts_with('.')) {
                        key.clear();
                    }
                    key.push_str(w);
                }
                // A stray `=` (the padding of an unquoted base64 `header.b`) has no key.
                Token::Equals if key.is_empty() => {}
                Token::Equals => {
                    let value = match iter.next() {
                        Some(Token::Word(v) | Token::Quoted(v)) => v.clone(),
                        _ => String::new(),
                    };
                    pairs.push((std::mem::take(&mut key).to_ascii_lowercase(), value));
                }
                Token::Semicolon => {}
            }
        }
        let mut pairs = pairs.into_iter();
        let (method, result) = pairs.next()?;
        let method = method.split('/').next().unwrap_or_default().to_string();
        Some(Resinfo {
            method,
            result: result.to_ascii_lowercase(),
            properties: pairs.collect(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MX: &str = "mx.example.com";

    fn verdict(headers: &[&str], from_domain: &str) -> Verdict {
        let values: Vec<String> = headers.iter().map(|h| h.to_string()).collect();
        from_authentication_results(&values, MX, from_domain)
    }

    #[test]
    fn authentication_results_table() {
        // (rule, headers top-most first, From domain, expected method of a pass or None)
        let cases: &[(&str, &[&str], &str, Option<&str>)] = &[
            (
                "dkim pass of the From domain counts",
                &["mx.example.com; dkim=pass header.d=example.com header.s=sel"],
                "example.com",
                Some("dkim"),
            ),
            (
                "dkim pass of a parent domain aligns (relaxed)",
                &["mx.example.com; dkim=pass header.d=example.com"],
                "a.example.com",
                Some("dkim"),
            ),
            (
                "dkim pass of a child domain does not align",
                &["mx.example.com; dkim=pass header.d=a.example.com"],
                "example.com",
                None,
            ),
            (
                "dkim pass of another domain does not count",
                &["mx.example.com; dkim=pass header.d=evil.com"],
                "example.com",
                None,
            ),
            (
                "a domain that merely ends with the same letters does not align",
                &["mx.example.com; dkim=pass header.d=example.com"],
                "notexample.com",
                None,
            ),
            (
                "a top-level domain never aligns",
                &["mx.example.com; dkim=pass header.d=com"],
                "example.com",
                None,
            ),
            (
                "header.i gives the domain when header.d is absent",
                &["mx.example.com; dkim=pass header.i=@example.com"],
                "example.com",
                Some("dkim"),
            ),
            (
                "dkim fail is not a pass",
                &["mx.example.com; dkim=fail header.d=example.com"],
                "example.com",
                None,
            ),
            (
                "spf pass with an aligned smtp.mailfrom counts",
                &["mx.example.com; spf=pass smtp.mailfrom=bounce@example.com"],
                "example.com",
                Some("spf"),
            ),
            (
                "spf pass with a bare-domain smtp.mailfrom counts",
                &["mx.example.com; spf=pass smtp.mailfrom=example.com"],
                "example.com",
                Some("spf"),
            ),
            (
                "spf pass of a child mailfrom domain does not align",
                &["mx.example.com; spf=pass smtp.mailfrom=b@mail.example.com"],
                "example.com",
                None,
            ),
            (
                "spf pass of a parent mailfrom domain aligns",
                &["mx.example.com; spf=pass smtp.mailfrom=bounce@example.com"],
                "eu.example.com",
                Some("spf"),
            ),
            (
                "spf pass without smtp.mailfrom (helo only) does not count",
                &["mx.example.com; spf=pass smtp.helo=mail.example.com"],
                "example.com",
                None,
            ),
            (
                "spf pass of an unaligned mailfrom does not count",
                &["mx.example.com; spf=pass smtp.mailfrom=x@evil.com"],
                "example.com",
                None,
            ),
            (
                "softfail, neutral, temperror and none are not passes",
                &[
                    "mx.example.com; dkim=temperror header.d=example.com; spf=softfail smtp.mailfrom=a@example.com; dmarc=none",
                ],
                "example.com",
                None,
            ),
            (
                "spf neutral is not a pass",
                &["mx.example.com; spf=neutral smtp.mailfrom=a@example.com"],
                "example.com",
                None,
            ),
            (
                "a forged header of another authserv-id is ignored",
                &[
                    "mx.example.com; dkim=fail header.d=example.com",
                    "mail.attacker.test; dkim=pass header.d=example.com",
                ],
                "example.com",
                None,
            ),
            (
                "no header of ours at all is a fail",
                &["mail.attacker.test; dkim=pass header.d=example.com"],
                "example.com",
                None,
            ),
            (
                "a header with our id below ours is the sender's forgery",
                &[
                    "mx.example.com; dkim=none",
                    "mx.example.com; dkim=pass header.d=example.com",
                ],
                "example.com",
                None,
            ),
            (
                "another host's header above ours does not hide ours",
                &[
                    "relay.example.net; spf=fail smtp.mailfrom=a@example.com",
                    "mx.example.com; dkim=pass header.d=example.com",
                ],
                "example.com",
                Some("dkim"),
            ),
            (
                "authserv-id, method, result and property names ignore case",
                &["MX.Example.COM; DKIM=Pass Header.D=EXAMPLE.com"],
                "example.com",
                Some("dkim"),
            ),
            (
                "comments inside values, a version and a reason are skipped",
                &[
                    "mx.example.com (Postfix) 1; dkim=pass (2048-bit key; secure) reason=\"good sig\" header.d=example.com (the; domain) header.b=\"AbC+/=\"",
                ],
                "example.com",
                Some("dkim"),
            ),
            (
                "a quoted authserv-id and quoted values are read",
                &["\"mx.example.com\"; dkim=pass header.d=\"example.com\""],
                "example.com",
                Some("dkim"),
            ),
            (
                "spaces around = and an unquoted base64 header.b are tolerated",
                &["mx.example.com; dkim = pass header.b=ab+/9= header.d = example.com; spf=fail"],
                "example.com",
                Some("dkim"),
            ),
            (
                "an unquoted multi-word reason does not swallow the next property",
                &["mx.example.com; dkim=pass reason=good sig header.d=example.com"],
                "example.com",
                Some("dkim"),
            ),
            (
                "a property split at its dot by spaces is rejoined",
                &["mx.example.com; dkim=pass header . d=example.com"],
                "example.com",
                Some("dkim"),
            ),
            (
                "a mailfrom in angle brackets is read",
                &["mx.example.com; spf=pass smtp.mailfrom=<bounce@example.com>"],
                "example.com",
                Some("spf"),
            ),
            (
                "an empty mailfrom (a bounce) does not count",
                &["mx.example.com; spf=pass smtp.mailfrom=<>"],
                "example.com",
                None,
            ),
            (
                "a method version is ignored",
                &["mx.example.com; dkim/1=pass header.d=example.com"],
                "example.com",
                Some("dkim"),
            ),
            (
                "the no-result form none is a fail",
                &["mx.example.com; none"],
                "example.com",
                None,
            ),
            (
                "dkim is preferred when both pass",
                &[
                    "mx.example.com; spf=pass smtp.mailfrom=a@example.com; dkim=pass header.d=example.com",
                ],
                "example.com",
                Some("dkim"),
            ),
            (
                "the From domain's case and trailing dot do not matter",
                &["mx.example.com; dkim=pass header.d=example.com."],
                "Example.COM",
                Some("dkim"),
            ),
            (
                "a garbled value is ignored, not a panic",
                &[
                    "((unterminated",
                    "mx.example.com; dkim=pass header.d=example.com",
                ],
                "example.com",
                Some("dkim"),
            ),
            ("no headers at all is a fail", &[], "example.com", None),
        ];
        for (rule, headers, from, expected) in cases {
            let got = verdict(headers, from);
            let method = match &got {
                Verdict::Pass { method, .. } => Some(method.as_str()),
                Verdict::Fail { .. } => None,
            };
            assert_eq!(method, *expected, "{rule}: {got:?}");
        }
    }

    #[test]
    fn pass_detail_names_the_domain_and_the_host() {
        let got = verdict(
            &["mx.example.com; dkim=pass header.d=example.com"],
            "example.com",
        );
        assert_eq!(
            got,
            Verdict::Pass {
                method: "dkim".into(),
                detail: "dkim=pass header.d=example.com (Authentication-Results of mx.example.com)"
                    .into()
            }
        );
    }

    #[test]
    fn fail_says_why_in_words() {
        assert_eq!(
            verdict(&[], "example.com"),
            Verdict::Fail {
                why: "no Authentication-Results from mx.example.com".into()
            }
        );
        assert_eq!(
            verdict(
                &[
                    "mx.example.com; dkim=pass header.d=evil.com; spf=softfail smtp.mailfrom=a@example.com"
                ],
                "example.com"
            ),
            Verdict::Fail {
                why: "Authentication-Results of mx.example.com shows no DKIM or SPF pass aligned \
                      with example.com: dkim=pass header.d=evil.com, spf=softfail \
                      smtp.mailfrom=a@example.com"
                    .into()
            }
        );
    }

    #[test]
    fn parse_keeps_every_header_top_most_first_unfolded() {
        let raw = "Authentication-Results: mx.example.com;\r\n\tdkim=pass header.d=example.com\r\n\
                   Received: from somewhere\r\n\
                   Authentication-Results: mail.attacker.test; dkim=pass\r\n\
                   From: ann@example.com\r\n\
                   Subject: hi\r\n\r\nbody\r\n";
        let mail = crate::mail::parse(raw.as_bytes(), 1 << 20).expect("parses");
        assert_eq!(
            mail.authentication_results,
            [
                "mx.example.com;\tdkim=pass header.d=example.com",
                "mail.attacker.test; dkim=pass"
            ]
        );
        assert!(
            from_authentication_results(&mail.authentication_results, MX, &mail.from.domain())
                .is_pass()
        );
    }

    #[test]
    fn alignment_is_by_whole_labels() {
        let cases = [
            ("example.com", "example.com", true),
            ("example.com", "a.b.example.com", true),
            ("example.com", "notexample.com", false),
            ("ample.com", "example.com", false),
            ("a.example.com", "example.com", false),
            ("", "example.com", false),
            ("com", "example.com", false),
            (".example.com", "a.example.com", false),
        ];
        for (authenticated, from, expected) in cases {
            assert_eq!(
                aligned(authenticated, from),
                expected,
                "{authenticated} for {from}"
            );
        }
    }
}
