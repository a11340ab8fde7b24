//! `${var}`, `${secret.NAME}` and `${steps.ID.outputs.NAME}` inside runbook strings.
//!
//! `$${` stands for a literal `${`, so shell variables can be written `$${HOME}`.

use std::collections::BTreeMap;
use std::fmt;

/// What a `${...}` refers to.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Reference {
    Var(String),
    Secret(String),
    StepOutput { step: String, name: String },
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reference::Var(name) => write!(f, "${{{name}}}"),
            Reference::Secret(name) => write!(f, "${{secret.{name}}}"),
            Reference::StepOutput { step, name } => write!(f, "${{steps.{step}.outputs.{name}}}"),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Segment {
    Literal(String),
    Ref(Reference),
}

/// A parsed string: literal text and references, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    segments: Vec<Segment>,
}

/// A malformed `${...}`, with the byte offset of its `$` inside the string.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct TemplateError {
    pub offset: usize,
    pub message: String,
}

/// Values a template can draw on. `None` means "not known (yet)".
pub trait Scope {
    fn var(&self, name: &str) -> Option<String>;
    fn secret(&self, name: &str) -> Option<String>;
    fn output(&self, step: &str, name: &str) -> Option<String>;
}

pub use crate::redact::MASK;

/// A rendered string, and the same string with secrets masked for display.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Rendered {
    pub value: String,
    pub display: String,
}

fn is_name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_' || c == '-'
}

fn valid_name(name: &str) -> bool {
    !name.is_empty() && name.chars().all(is_name_char)
}

impl Template {
    pub fn parse(text: &str) -> Result<Template, TemplateError> {
        let mut segments = Vec::new();
        let mut literal = String::new();
        let mut rest = text;
        let mut offset = 0;
        while let Some(pos) = rest.find('$') {
            literal.push_str(&rest[..pos]);
            let after = &rest[pos..];
            if let Some(tail) = after.strip_prefix("$${") {
                literal.push_str("${");
                rest = tail;
                offset += pos + 3;
                continue;
            }
            if !after.starts_with("${") {
                literal.push('$');
                rest = &after[1..];
                offset += pos + 1;
                continue;
            }
            let start = offset + pos;
            let Some(end) = after.find('}') else {
                return Err(TemplateError {
                    offset: start,
                    message:
                        "unterminated `${`: add the closing `}` (write `$${` for a literal `${`)"
                            .to_string(),
                });
            };
            let inner = after[2..end].trim();
            let reference = parse_reference(inner).ok_or_else(|| TemplateError {
                offset: start,
                message: format!(
                    "`${{{inner}}}` is not a reference: use `${{var}}`, `${{secret.NAME}}` or \
                     `${{steps.ID.outputs.NAME}}` (write `$${{` for a literal `${{`)"
                ),
            })?;
            if !literal.is_empty() {
                segments.push(Segment::Literal(std::mem::take(&mut literal)));
            }
            segments.push(Segment::Ref(reference));
            rest = &after[end + 1..];
            offset = start + end + 1;
        }
        literal.push_str(rest);
        if !literal.is_empty() {
            segments.push(Segment::Literal(literal));
        }
        Ok(Template { segments })
    }

    pub fn references(&self) -> impl Iterator<Item = &Reference> {
        self.segments.iter().filter_map(|s| match s {
            Segment::Ref(r) => Some(r),
            Segment::Literal(_) => None,
        })
    }

    pub fn has_references(&self) -> bool {
        self.references().next().is_some()
    }

    /// Fills every reference; the first one the scope cannot supply is returned as the error.
    pub fn render(&self, scope: &dyn Scope) -> Result<Rendered, Reference> {
        let mut out = Rendered::default();
        for segment in &self.segments {
            match segment {
                Segment::Literal(text) => {
                    out.value.push_str(text);
                    out.display.push_str(text);
                }
                Segment::Ref(reference) => {
                    let value = lookup(scope, reference).ok_or_else(|| reference.clone())?;
                    out.value.push_str(&value);
                    if matches!(reference, Reference::Secret(_)) {
                        out.display.push_str(MASK);
                    } else {
                        out.display.push_str(&value);
                    }
                }
            }
        }
        Ok(out)
    }

    /// Fills what is known, masks secrets, and leaves unknown references as written.
    pub fn display(&self, scope: &dyn Scope) -> String {
        let mut out = String::new();
        for segment in &self.segments {
            match segment {
                Segment::Literal(text) => out.push_str(text),
                Segment::Ref(Reference::Secret(_)) => out.push_str(MASK),
                Segment::Ref(reference) => match lookup(scope, reference) {
                    Some(value) => out.push_str(&value),
                    None => out.push_str(&reference.to_string()),
                },
            }
        }
        out
    }

    /// Fills only `${var}`s, keeping secrets and step outputs as references (escaped literals stay escaped).
    pub fn expand_vars(&self, scope: &dyn Scope) -> String {
        let mut out = String::new();
        for segment in &self.segments {
            match segment {
                Segment::Literal(text) => out.push_str(&text.replace("${", "$${")),
                Segment::Ref(Reference::Var(name)) => match scope.var(name) {
                    Some(value) => out.push_str(&value.replace("${", "$${")),
                    None => out.push_str(&Reference::Var(name.clone()).to_string()),
                },
                Segment::Ref(other) => out.push_str(&other.to_string()),
            }
        }
        out
    }
}

/// A shell command in which every value is data: each `${...}` is an expansion of an
/// environment variable that holds its value (quoted for where it stands), so no value is ever
/// parsed by the shell, and no secret is on the command line.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ShellRendered {
    /// The script as bash runs it, and as plans and screens show it (it holds no value).
    pub script: String,
    /// The environment the script reads: name → (value, value as shown: secrets masked,
    /// unknown references as written).
    pub env: BTreeMap<String, (String, String)>,
}

/// Where a position in shell text stands, for quoting what is put there.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Quote {
    None,
    Single,
    Double,
}

/// Follows bash's quoting through `text`.
fn advance(state: &mut Quote, escaped: &mut bool, text: &str) {
    for c in text.chars() {
        if *escaped {
            *escaped = false;
            continue;
        }
        *state = match (*state, c) {
            (Quote::None | Quote::Double, '\\') => {
                *escaped = true;
                *state
            }
            (Quote::None, '\'') => Quote::Single,
            (Quote::Single, '\'') => Quote::None,
            (Quote::None, '"') => Quote::Double,
            (Quote::Double, '"') => Quote::None,
            (state, _) => state,
        };
    }
}

/// The environment variable that carries a reference's value into a shell step.
fn env_name(reference: &Reference) -> String {
    let clean = |s: &str| -> String {
        s.chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
            .collect()
    };
    match reference {
        Reference::Var(name) => format!("CUTOVER_VAR_{}", clean(name)),
        Reference::Secret(name) => format!("CUTOVER_SECRET_{}", clean(name)),
        Reference::StepOutput { step, name } => {
            format!("CUTOVER_OUT_{}_{}", clean(step), clean(name))
        }
    }
}

impl Template {
    /// Renders a shell command with its values as data (see [`ShellRendered`]). `${var}`s named
    /// in `splice` are pasted in as shell text instead: the explicit, visible form for an author
    /// who means it (never a secret). With `known_only`, a reference the scope cannot supply is
    /// kept (for showing a plan) instead of failing.
    pub fn render_shell(
        &self,
        scope: &dyn Scope,
        splice: &[String],
        known_only: bool,
    ) -> Result<ShellRendered, Reference> {
        let mut out = ShellRendered::default();
        let mut names: BTreeMap<Reference, String> = BTreeMap::new();
        let (mut quote, mut escaped) = (Quote::None, false);
        for segment in &self.segments {
            let reference = match segment {
                Segment::Literal(text) => {
                    advance(&mut quote, &mut escaped, text);
                    out.script.push_str(text);
                    continue;
                }
                Segment::Ref(reference) => reference,
            };
            escaped = false;
            let value = lookup(scope, reference);
            if let (Reference::Var(name), Some(value)) = (reference, &value) {
                if splice.contains(name) {
                    advance(&mut quote, &mut escaped, value);
                    out.script.push_str(value);
                    continue;
                }
            }
            let value = match value {
                Some(v) => v,
                None if known_only => reference.to_string(),
                None => return Err(reference.clone()),
            };
            let name = match names.get(reference) {
                Some(name) => name.clone(),
                None => {
                    let base = env_name(reference);
                    let mut name = base.clone();
                    let mut n = 2;
                    while names.values().any(|used| used == &name) {
                        name = format!("{base}_{n}");
                        n += 1;
                    }
                    names.insert(reference.clone(), name.clone());
                    name
                }
            };
            out.script.push_str(&match quote {
                Quote::None => format!("\"${{{name}}}\""),
                Quote::Double => format!("${{{name}}}"),
                Quote::Single => format!("'\"${{{name}}}\"'"),
            });
            let shown = if matches!(reference, Reference::Secret(_)) {
                MASK.to_string()
            } else {
                value.clone()
            };
            out.env.insert(name, (value, shown));
        }
        Ok(out)
    }
}

fn lookup(scope: &dyn Scope, reference: &Reference) -> Option<String> {
    match reference {
        Reference::Var(name) => scope.var(name),
        Reference::Secret(name) => scope.secret(name),
        Reference::StepOutput { step, name } => scope.output(step, name),
    }
}

fn parse_reference(inner: &str) -> Option<Reference> {
    if let Some(name) = inner.strip_prefix("secret.") {
        return valid_name(name).then(|| Reference::Secret(name.to_string()));
    }
    if let Some(rest) = inner.strip_prefix("steps.") {
        let (step, name) = rest.split_once(".outputs.")?;
        return (valid_name(step) && valid_name(name)).then(|| Reference::StepOutput {
            step: step.to_string(),
            name: name.to_string(),
        });
    }
    valid_name(inner).then(|| Reference::Var(inner.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    struct TestScope;
    impl Scope for TestScope {
        fn var(&self, name: &str) -> Option<String> {
            (name == "app").then(|| "gengar".to_string())
        }
        fn secret(&self, name: &str) -> Option<String> {
            (name == "DB").then(|| "postgres://u:pw@h/db".to_string())
        }
        fn output(&self, step: &str, name: &str) -> Option<String> {
            (step == "snap" && name == "id").then(|| "snap-1".to_string())
        }
    }

    #[test]
    fn renders_all_reference_kinds_and_masks_secrets() {
        let t =
            Template::parse("pg_dump ${secret.DB} -a ${app} ${steps.snap.outputs.id} $${HOME} $5")
                .unwrap();
        let r = t.render(&TestScope).unwrap();
        assert_eq!(
            r.value,
            "pg_dump postgres://u:pw@h/db -a gengar snap-1 ${HOME} $5"
        );
        assert_eq!(r.display, "pg_dump *** -a gengar snap-1 ${HOME} $5");
    }

    #[test]
    fn missing_reference_is_named() {
        let t = Template::parse("x ${nope}").unwrap();
        assert_eq!(t.render(&TestScope), Err(Reference::Var("nope".into())));
        assert_eq!(t.display(&TestScope), "x ${nope}");
    }

    #[test]
    fn malformed_references_report_offset() {
        let e = Template::parse("ab ${unclosed").unwrap_err();
        assert_eq!(e.offset, 3);
        let e = Template::parse("ab ${steps.x.y}").unwrap_err();
        assert_eq!(e.offset, 3);
        assert!(e.message.contains("not a reference"));
    }

    #[test]
    fn shell_values_are_expansions_of_variables_quoted_where_they_stand() {
        struct Hostile;
        impl Scope for Hostile {
            fn var(&self, name: &str) -> Option<String> {
                Some(format!("$(touch PWNED-{name}); '\"\n"))
            }
            fn secret(&self, _: &str) -> Option<String> {
                Some("s3cret".into())
            }
            fn output(&self, _: &str, _: &str) -> Option<String> {
                Some("x; rm -rf /".into())
            }
        }
        let t = Template::parse(
            "run ${a} \"in ${b}\" '${c}' ${secret.S} ${steps.x-y.outputs.id} $${HOME} ${a}",
        )
        .unwrap();
        let r = t.render_shell(&Hostile, &[], false).unwrap();
        assert_eq!(
            r.script,
            "run \"${CUTOVER_VAR_a}\" \"in ${CUTOVER_VAR_b}\" ''\"${CUTOVER_VAR_c}\"'' \"${CUTOVER_SECRET_S}\" \"${CUTOVER_OUT_x_y_id}\" ${HOME} \"${CUTOVER_VAR_a}\""
        );
        assert!(!r.script.contains("s3cret") && !r.script.contains("PWNED"));
        assert_eq!(
            r.env["CUTOVER_SECRET_S"],
            ("s3cret".to_string(), MASK.to_string())
        );
        assert_eq!(r.env["CUTOVER_OUT_x_y_id"].0, "x; rm -rf /");
        assert_eq!(r.env.len(), 5);
        // Spliced on purpose: the value is shell text.
        let t = Template::parse("echo ${app}").unwrap();
        let r = t
            .render_shell(&TestScope, &["app".to_string()], false)
            .unwrap();
        assert_eq!(r.script, "echo gengar");
        assert!(r.env.is_empty());
        // A plan shows what it cannot know yet as written.
        let t = Template::parse("docker stop ${steps.run.outputs.container}").unwrap();
        assert_eq!(
            t.render_shell(&TestScope, &[], false),
            Err(Reference::StepOutput {
                step: "run".into(),
                name: "container".into()
            })
        );
        let r = t.render_shell(&TestScope, &[], true).unwrap();
        assert_eq!(r.script, "docker stop \"${CUTOVER_OUT_run_container}\"");
        assert_eq!(
            r.env["CUTOVER_OUT_run_container"].1,
            "${steps.run.outputs.container}"
        );
    }

    #[test]
    fn expand_vars_keeps_escapes_and_other_references() {
        let t = Template::parse("${app} $${HOME} ${secret.DB}").unwrap();
        let expanded = t.expand_vars(&TestScope);
        assert_eq!(expanded, "gengar $${HOME} ${secret.DB}");
        assert_eq!(
            Template::parse(&expanded).unwrap(),
            Template::parse("gengar $${HOME} ${secret.DB}").unwrap()
        );
    }
}
