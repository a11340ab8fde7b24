//! `${var}`, `${secret.NAME}` and `${steps.ID.outputs.NAME}` inside runbook strings.
//!
//! `$${` stands for a literal `${`, so shell variables can be written `$${HOME}`.

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

/// The masked stand-in for a secret wherever text is shown or stored.
pub const MASK: &str = "***";

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
