//! `scaffold`: writes the files the plan creates (Dockerfile, health module, Terraform, the
//! deploy workflow, scripts/ecs-run.sh) from reviewed templates filled with the step's
//! variables. Each file is new, unchanged, patched (app.module.ts gets its import: the plan's
//! one intended modification, shown as a diff) or would change (shown as a unified diff); a
//! file that would change is never written by the step: `cutover scaffold --overwrite` does
//! that after a typed confirmation. Nothing is written when anything is wrong.
//!
//! Templates use `@@name@@` for a variable: it collides with none of the languages they are
//! written in (HCL's and GitHub Actions' `${...}`, shell's `$X`).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use async_trait::async_trait;

use super::{Action, ActionContext, Outcome};
use crate::runbook::{ActionSchema, ParamSpec, ParamType};

pub struct Scaffold;

static SCHEMA: ActionSchema = ActionSchema {
    kind: "scaffold",
    summary: "writes the plan's files into the app repository from templates (new files only; changes are shown as diffs)",
    params: &[
        ParamSpec::required(
            "repo",
            ParamType::String,
            "the app repository, relative to the runbook",
        ),
        ParamSpec::optional(
            "templates",
            ParamType::String,
            "template directory, relative to the runbook (assets/templates)",
        ),
        ParamSpec::required(
            "vars",
            ParamType::StringMap,
            "values for the templates' @@name@@ placeholders",
        ),
        ParamSpec::optional(
            "app_module",
            ParamType::String,
            "NestJS app.module.ts (in the repo) to import HealthModule into, as a patch",
        ),
    ],
    outputs: &["written", "unchanged"],
    needs_operator_note: false,
};

#[derive(Debug, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScaffoldParams {
    pub repo: String,
    pub templates: Option<String>,
    pub vars: BTreeMap<String, String>,
    pub app_module: Option<String>,
}

/// What scaffolding would do to one file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    New,
    Unchanged,
    /// An existing file that receives an insertion and keeps everything else: its diff.
    Patched(String),
    /// The file differs from what the template renders: its unified diff.
    Differs(String),
}

#[derive(Debug, Clone)]
pub struct FilePlan {
    /// Path inside the repository.
    pub path: PathBuf,
    pub content: String,
    pub executable: bool,
    pub change: Change,
}

/// The whole scaffold, decided before anything is written.
#[derive(Debug, Clone)]
pub struct Plan {
    pub repo: PathBuf,
    pub files: Vec<FilePlan>,
}

impl Plan {
    pub fn differing(&self) -> Vec<&FilePlan> {
        self.files
            .iter()
            .filter(|f| matches!(f.change, Change::Differs(_)))
            .collect()
    }

    /// Lines saying what happens to each file; diffs included when `diffs`.
    pub fn report(&self, diffs: bool) -> Vec<String> {
        let mut lines = Vec::new();
        for f in &self.files {
            let what = match &f.change {
                Change::New => "new",
                Change::Unchanged => "unchanged",
                Change::Patched(_) => "patched",
                Change::Differs(_) => "would change",
            };
            lines.push(format!("{what:<13} {}", f.path.display()));
            if let (true, Change::Differs(diff) | Change::Patched(diff)) = (diffs, &f.change) {
                lines.extend(diff.lines().map(str::to_string));
            }
        }
        lines
    }

    /// Writes new files, and differing ones only when `overwrite`. Returns how many were written.
    pub fn apply(&self, overwrite: bool) -> Result<usize, String> {
        if !overwrite && !self.differing().is_empty() {
            return Err(self.refusal());
        }
        let mut written = 0;
        for f in &self.files {
            if f.change == Change::Unchanged {
                continue;
            }
            let target = self.repo.join(&f.path);
            if let Some(parent) = target.parent() {
                std::fs::create_dir_all(parent)
                    .map_err(|e| format!("cannot create {}: {e}", parent.display()))?;
            }
            // Written beside, then renamed: a crash leaves the old file or the new one.
            let mut temp_name = target.file_name().unwrap_or_default().to_os_string();
            temp_name.push(".cutover-tmp");
            let temp = target.with_file_name(temp_name);
            std::fs::write(&temp, &f.content)
                .map_err(|e| format!("cannot write {}: {e}", temp.display()))?;
            if f.executable {
                use std::os::unix::fs::PermissionsExt;
                std::fs::set_permissions(&temp, std::fs::Permissions::from_mode(0o755))
                    .map_err(|e| format!("cannot make {} executable: {e}", temp.display()))?;
            }
            std::fs::rename(&temp, &target)
                .map_err(|e| format!("cannot write {}: {e}", target.display()))?;
            written += 1;
        }
        Ok(written)
    }

    fn refusal(&self) -> String {
        let names: Vec<String> = self
            .differing()
            .iter()
            .map(|f| f.path.display().to_string())
            .collect();
        format!(
            "{} file(s) differ from the templates and were not overwritten: {} (nothing was written). \
             Review with `cutover scaffold --dry-run`; overwrite with `cutover scaffold --overwrite`",
            names.len(),
            names.join(", ")
        )
    }
}

/// Fills `@@name@@` placeholders; every missing name is collected.
pub fn render(
    template: &str,
    vars: &BTreeMap<String, String>,
    missing: &mut BTreeSet<String>,
) -> String {
    let mut out = String::with_capacity(template.len());
    let mut rest = template;
    while let Some(start) = rest.find("@@") {
        let after = &rest[start + 2..];
        let Some(end) = after.find("@@") else {
            break;
        };
        let name = &after[..end];
        let is_name =
            !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !is_name {
            out.push_str(&rest[..start + 2]);
            rest = after;
            continue;
        }
        out.push_str(&rest[..start]);
        match vars.get(name) {
            Some(value) => out.push_str(value),
            None => {
                missing.insert(name.to_string());
            }
        }
        rest = &after[end + 2..];
    }
    out.push_str(rest);
    out
}

fn walk(dir: &Path, base: &Path, out: &mut Vec<PathBuf>) -> Result<(), String> {
    let entries =
        std::fs::read_dir(dir).map_err(|e| format!("cannot read {}: {e}", dir.display()))?;
    for entry in entries {
        let entry = entry.map_err(|e| format!("cannot read {}: {e}", dir.display()))?;
        let path = entry.path();
        if path.is_dir() {
            walk(&path, base, out)?;
        } else if let Ok(relative) = path.strip_prefix(base) {
            out.push(relative.to_path_buf());
        }
    }
    Ok(())
}

/// Adds `import { HealthModule }` and `HealthModule` to `@Module({ imports: [...] })`, leaving
/// the rest of the file as it is. A file that already has it is returned unchanged.
pub fn patch_app_module(text: &str) -> Result<String, String> {
    const IMPORT: &str = "import { HealthModule } from './modules/health/health.module';";
    if text.contains("HealthModule") {
        return Ok(text.to_string());
    }
    let lines: Vec<&str> = text.split_inclusive('\n').collect();
    // The end of the import block: the last line of the last `import ...;` statement.
    let mut after_imports = 0;
    let mut in_import = false;
    for (i, line) in lines.iter().enumerate() {
        let trimmed = line.trim();
        if trimmed.starts_with("import ") {
            in_import = true;
        }
        if in_import && trimmed.ends_with(';') {
            after_imports = i + 1;
            in_import = false;
        }
    }
    let mut out = String::with_capacity(text.len() + 100);
    for line in &lines[..after_imports] {
        out.push_str(line);
    }
    out.push_str(IMPORT);
    out.push('\n');
    let mut body: String = lines[after_imports..].concat();
    let module_at = body
        .find("@Module(")
        .ok_or("app.module.ts has no @Module(...): import HealthModule by hand")?;
    let imports_at = body[module_at..]
        .find("imports:")
        .map(|i| module_at + i)
        .ok_or("app.module.ts's @Module has no `imports:` list: add HealthModule by hand")?;
    let bracket = body[imports_at..]
        .find('[')
        .map(|i| imports_at + i)
        .ok_or("app.module.ts's `imports:` is not a list: add HealthModule by hand")?;
    let following = &body[bracket + 1..];
    let insert = if following.starts_with('\n') || following.starts_with("\r\n") {
        // One module per line: take the next line's indentation.
        let next_line = following.trim_start_matches(['\r', '\n']);
        let indent: String = next_line
            .chars()
            .take_while(|c| *c == ' ' || *c == '\t')
            .collect();
        format!("\n{indent}HealthModule,")
    } else {
        "HealthModule, ".to_string()
    };
    body.insert_str(bracket + 1, &insert);
    out.push_str(&body);
    Ok(out)
}

fn unified_diff(path: &Path, old: &str, new: &str) -> String {
    let name = path.display().to_string();
    similar::TextDiff::from_lines(old, new)
        .unified_diff()
        .context_radius(3)
        .header(&format!("a/{name}"), &format!("b/{name}"))
        .to_string()
}

/// Decides what scaffolding would do; reads only. `base` resolves relative paths.
pub fn plan(params: &ScaffoldParams, base: &Path) -> Result<Plan, String> {
    let repo = base.join(&params.repo);
    if !repo.is_dir() {
        return Err(format!(
            "the app repository {} does not exist (the step's `repo`)",
            repo.display()
        ));
    }
    let templates = base.join(params.templates.as_deref().unwrap_or("assets/templates"));
    if !templates.is_dir() {
        return Err(format!(
            "the template directory {} does not exist",
            templates.display()
        ));
    }
    let mut names = Vec::new();
    walk(&templates, &templates, &mut names)?;
    names.sort();
    let mut missing = BTreeSet::new();
    let mut rendered = Vec::new();
    for name in names {
        let source = templates.join(&name);
        let text = std::fs::read_to_string(&source)
            .map_err(|e| format!("cannot read template {}: {e}", source.display()))?;
        let executable = {
            use std::os::unix::fs::PermissionsExt;
            std::fs::metadata(&source).is_ok_and(|m| m.permissions().mode() & 0o111 != 0)
        };
        let content = render(&text, &params.vars, &mut missing);
        rendered.push((name, content, executable));
    }
    if !missing.is_empty() {
        let names: Vec<String> = missing.into_iter().collect();
        return Err(format!(
            "the templates need variable(s) the step does not give: {} (add them to the step's `vars`; nothing was written)",
            names.join(", ")
        ));
    }
    if let Some(module) = &params.app_module {
        let path = repo.join(module);
        let text = std::fs::read_to_string(&path)
            .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        let patched = patch_app_module(&text)?;
        rendered.push((PathBuf::from(module), patched, false));
    }
    let patched_file = params.app_module.as_deref().map(Path::new);
    let files = rendered
        .into_iter()
        .map(|(path, content, executable)| {
            let change = match std::fs::read_to_string(repo.join(&path)) {
                Err(_) => Change::New,
                Ok(existing) if existing == content => Change::Unchanged,
                Ok(existing) if Some(path.as_path()) == patched_file => {
                    Change::Patched(unified_diff(&path, &existing, &content))
                }
                Ok(existing) => Change::Differs(unified_diff(&path, &existing, &content)),
            };
            FilePlan {
                path,
                content,
                executable,
                change,
            }
        })
        .collect();
    Ok(Plan { repo, files })
}

#[async_trait]
impl Action for Scaffold {
    fn schema(&self) -> &'static ActionSchema {
        &SCHEMA
    }

    fn describe(&self, params: &serde_json::Value) -> String {
        format!(
            "write the plan's files into {} from {}",
            params.get("repo").and_then(|v| v.as_str()).unwrap_or("?"),
            params
                .get("templates")
                .and_then(|v| v.as_str())
                .unwrap_or("assets/templates")
        )
    }

    async fn run(&self, ctx: ActionContext) -> Outcome {
        let params: ScaffoldParams = match ctx.params() {
            Ok(p) => p,
            Err(o) => return o,
        };
        let plan = match plan(&params, &ctx.work_dir) {
            Ok(plan) => plan,
            Err(e) => return Outcome::failed(e),
        };
        for line in plan.report(true) {
            ctx.report.info(line).await;
        }
        let written = match plan.apply(false) {
            Ok(n) => n,
            Err(e) => return Outcome::failed(e),
        };
        let unchanged = plan.files.len() - written;
        ctx.report.output("written", written.to_string()).await;
        ctx.report.output("unchanged", unchanged.to_string()).await;
        Outcome::Succeeded {
            note: Some(format!(
                "{written} file(s) written, {unchanged} unchanged in {}",
                plan.repo.display()
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_are_filled_and_missing_ones_named() {
        let vars: BTreeMap<String, String> = [("app".to_string(), "gengar".to_string())].into();
        let mut missing = BTreeSet::new();
        let out = render(
            "name=@@app@@ port=@@port@@ tf=${var.app} gh=${{ env.X }} mail=a@@b",
            &vars,
            &mut missing,
        );
        assert_eq!(
            out,
            "name=gengar port= tf=${var.app} gh=${{ env.X }} mail=a@@b"
        );
        assert_eq!(missing.into_iter().collect::<Vec<_>>(), vec!["port"]);
    }

    #[test]
    fn app_module_gets_the_import_as_a_patch() {
        let before = "import { Module } from '@nestjs/common';\nimport {\n  ConfigModule,\n} from '@nestjs/config';\n\n@Module({\n  imports: [\n    ConfigModule.forRoot(),\n    UsersModule,\n  ],\n})\nexport class AppModule {}\n";
        let after = patch_app_module(before).unwrap();
        assert_eq!(
            after,
            "import { Module } from '@nestjs/common';\nimport {\n  ConfigModule,\n} from '@nestjs/config';\nimport { HealthModule } from './modules/health/health.module';\n\n@Module({\n  imports: [\n    HealthModule,\n    ConfigModule.forRoot(),\n    UsersModule,\n  ],\n})\nexport class AppModule {}\n"
        );
        // Applied twice, nothing changes.
        assert_eq!(patch_app_module(&after).unwrap(), after);
        let inline = "import { Module } from '@nestjs/common';\n@Module({ imports: [UsersModule] })\nexport class AppModule {}\n";
        assert!(patch_app_module(inline)
            .unwrap()
            .contains("imports: [HealthModule, UsersModule]"));
        assert!(patch_app_module("export class AppModule {}\n")
            .unwrap_err()
            .contains("by hand"));
    }
}
