//! The Dockerfile `cutover init` writes from the app's own build (issue 29): what Heroku's
//! buildpack does, as a multi-stage image that runs as an unprivileged user. Node.js (npm, yarn,
//! pnpm; `heroku-postbuild` instead of `build` when present, as Heroku does), Python (pip,
//! Poetry, uv, Pipenv; Django's collectstatic) and Ruby (Bundler; Rails' assets:precompile with
//! a dummy secret). The bases are the official images on Debian bookworm: Heroku's stacks are
//! Ubuntu, and no official language image is. An app with a Dockerfile or heroku.yml of its
//! own keeps it: nothing is generated.
//!
//! `@@port@@` is left for the scaffold step to fill from the runbook's variables.

use super::repo::Toolchain;

/// A generated Dockerfile, or why there is none.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Generated {
    /// The Dockerfile and its .dockerignore, and what it assumed (said to the operator).
    Files {
        dockerfile: String,
        dockerignore: String,
        assumptions: Vec<String>,
    },
    /// The app builds its own image (the file named).
    Own(String),
    /// No ecosystem this generator knows: why.
    Unknown(String),
}

const DEFAULT_NODE: &str = "20";
const DEFAULT_PYTHON: &str = "3.12";
const DEFAULT_RUBY: &str = "3.3";
/// Pinned build tools (hadolint DL3013: pip installs pin their versions).
const POETRY: &str = "2.1.3";
const PIPENV: &str = "2024.4.1";
const UV: &str = "0.5.11";

/// The web process's command as the image's CMD: Procfile commands are shell (they use $PORT),
/// so they run under `sh -c`, with `exec` so the app gets the signals.
fn cmd(command: &str) -> String {
    let line = format!("exec {command}");
    format!(
        "CMD [\"/bin/sh\", \"-c\", {}]",
        serde_json::Value::String(line)
    )
}

/// The Dockerfile for `app` from `t`; `web` is the web process's command.
pub fn generate(app: &str, t: &Toolchain, web: Option<&str>) -> Generated {
    if let Some(own) = &t.own_image {
        return Generated::Own(own.clone());
    }
    let mut assumptions = Vec::new();
    let version = |default: &str, what: &str, assumptions: &mut Vec<String>| match &t.version {
        Some((v, from)) => {
            assumptions.push(format!("{what} {v} ({from})"));
            v.clone()
        }
        None => {
            assumptions.push(format!(
                "{what} {default}: nothing in the repository names a version (the image's tag is the one to change)"
            ));
            default.to_string()
        }
    };
    let web = match web {
        Some(w) => w.to_string(),
        None => {
            assumptions
                .push("no web process: the image's CMD is a placeholder to replace".to_string());
            "echo 'no web process: set the command' && exit 1".to_string()
        }
    };
    let header = format!(
        "# syntax=docker/dockerfile:1\n\
         # {app} for ECS Fargate: written by `cutover init` from the app's own build (what\n\
         # Heroku's buildpack does). Review it; `docker build --platform @@image_platform@@ .`\n"
    );
    let (body, ignore) = match t.ecosystem.as_deref() {
        Some("Node.js") => {
            let v = version(DEFAULT_NODE, "Node.js", &mut assumptions);
            (node(t, &v, &web, &mut assumptions), NODE_IGNORE)
        }
        Some("Python") => {
            let v = version(DEFAULT_PYTHON, "Python", &mut assumptions);
            (python(t, &v, &web, &mut assumptions), PYTHON_IGNORE)
        }
        Some("Ruby") => {
            let v = version(DEFAULT_RUBY, "Ruby", &mut assumptions);
            (ruby(t, &v, &web, &mut assumptions), RUBY_IGNORE)
        }
        other => {
            return Generated::Unknown(match other {
                Some(e) => format!("no Dockerfile template for {e}: write one"),
                None => "no lockfile says how the app is built (package-lock.json, yarn.lock, pnpm-lock.yaml, Gemfile.lock, poetry.lock, uv.lock, Pipfile.lock, requirements.txt): write a Dockerfile".to_string(),
            })
        }
    };
    Generated::Files {
        dockerfile: format!("{header}{body}"),
        dockerignore: format!("{COMMON_IGNORE}{ignore}"),
        assumptions,
    }
}

const COMMON_IGNORE: &str =
    ".git\n.env\n.env.*\n!.env.example\nDockerfile\n.dockerignore\nlog/\ntmp/\n";
const NODE_IGNORE: &str = "node_modules\ndist/\ncoverage/\n";
const PYTHON_IGNORE: &str = "__pycache__/\n*.pyc\n.venv/\nvenv/\nstaticfiles/\n";
const RUBY_IGNORE: &str = "vendor/bundle/\npublic/assets/\nnode_modules\nstorage/\n";

fn node(t: &Toolchain, v: &str, web: &str, assumptions: &mut Vec<String>) -> String {
    let manager = t.manager.as_deref().unwrap_or("npm");
    let berry = manager == "yarn" && t.yarn_berry;
    let (lock, install, run, prune) = match manager {
        "pnpm" => (
            "pnpm-lock.yaml",
            "pnpm install --frozen-lockfile",
            "pnpm run",
            "pnpm prune --prod --ignore-scripts",
        ),
        "yarn" if berry => (
            "yarn.lock .yarnrc.yml",
            "yarn install --immutable",
            "yarn run",
            "yarn workspaces focus --all --production",
        ),
        "yarn" => (
            "yarn.lock",
            "yarn install --frozen-lockfile",
            "yarn run",
            "yarn install --frozen-lockfile --production --ignore-scripts --prefer-offline",
        ),
        _ => (
            "package-lock.json",
            "npm ci",
            "npm run",
            "npm prune --omit=dev",
        ),
    };
    // pnpm and Yarn 2+ come through corepack (package.json's packageManager pins the version),
    // fetched once at build time into COREPACK_HOME and copied: a task never downloads them.
    let corepack = manager == "pnpm" || berry;
    let (setup, runtime_setup) = if corepack {
        assumptions.push(format!(
            "{} through corepack (package.json's packageManager pins its version), fetched at build time",
            if berry { "Yarn 2+" } else { "pnpm" }
        ));
        (
            "ENV COREPACK_HOME=/corepack\nRUN corepack enable\n",
            "ENV COREPACK_HOME=/corepack\nCOPY --from=build /corepack /corepack\nRUN corepack enable\n",
        )
    } else {
        ("", "")
    };
    let build = match &t.node_build {
        Some(script) => {
            assumptions.push(format!(
                "the build runs package.json's `{script}` script, as Heroku does"
            ));
            format!("RUN {run} {script} && {prune}\n")
        }
        None => format!("RUN {prune}\n"),
    };
    format!(
        "\n# --- stage 1: build -------------------------------------------------------------------------\n\
         FROM node:{v}-bookworm AS build\n\
         WORKDIR /app\n\
         {setup}\
         COPY package.json {lock} ./\n\
         RUN {install}\n\
         COPY . .\n\
         {build}\n\
         # --- stage 2: runtime -----------------------------------------------------------------------\n\
         FROM node:{v}-bookworm-slim AS runtime\n\
         ENV NODE_ENV=production\n\
         ENV PORT=@@port@@\n\
         WORKDIR /app\n\
         {runtime_setup}\
         COPY --from=build --chown=node:node /app ./\n\
         # The image's unprivileged user (node, uid 1000), never root.\n\
         USER 1000:1000\n\
         EXPOSE @@port@@\n\
         {}\n",
        cmd(web)
    )
}

fn python(t: &Toolchain, v: &str, web: &str, assumptions: &mut Vec<String>) -> String {
    let manager = t.manager.as_deref().unwrap_or("pip");
    let install = match manager {
        "Poetry" => format!(
            "COPY pyproject.toml poetry.lock ./\n\
             RUN python -m venv /tools \\\n  && /tools/bin/pip install --no-cache-dir poetry=={POETRY} \\\n  && /tools/bin/poetry install --only main --no-root --no-interaction\n"
        ),
        "uv" => format!(
            "COPY --from=ghcr.io/astral-sh/uv:{UV} /uv /usr/local/bin/uv\n\
             ENV UV_PROJECT_ENVIRONMENT=/venv UV_PYTHON_DOWNLOADS=never UV_PYTHON_PREFERENCE=only-system\n\
             COPY pyproject.toml uv.lock ./\n\
             RUN uv sync --frozen --no-dev --no-install-project\n"
        ),
        "Pipenv" => format!(
            "COPY Pipfile Pipfile.lock ./\n\
             RUN python -m venv /tools \\\n  && /tools/bin/pip install --no-cache-dir pipenv=={PIPENV} \\\n  && /tools/bin/pipenv requirements > /tmp/requirements.txt \\\n  && pip install --no-cache-dir -r /tmp/requirements.txt\n"
        ),
        _ => "COPY requirements.txt ./\nRUN pip install --no-cache-dir -r requirements.txt\n"
            .to_string(),
    };
    assumptions.push(format!(
        "{manager} installs the dependencies into /venv, copied alone into the runtime image"
    ));
    let assets = if t.framework.as_deref() == Some("django") {
        assumptions.push(
            "Django's collectstatic runs in the image with a dummy SECRET_KEY (Heroku runs it at build time with the config vars: an app whose settings need others at import fails here, and says which)"
                .to_string(),
        );
        "# collectstatic needs settings, not secrets: a dummy key, never used at runtime.\n\
         RUN SECRET_KEY=collectstatic-only-not-a-secret DJANGO_SECRET_KEY=collectstatic-only-not-a-secret \\\n  python manage.py collectstatic --noinput\n"
    } else {
        ""
    };
    format!(
        "\n# --- stage 1: build -------------------------------------------------------------------------\n\
         FROM python:{v}-slim-bookworm AS build\n\
         ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \\\n    VIRTUAL_ENV=/venv \\\n    PATH=/venv/bin:$PATH\n\
         WORKDIR /app\n\
         RUN python -m venv /venv\n\
         {install}\
         COPY . .\n\
         {assets}\n\
         # --- stage 2: runtime -----------------------------------------------------------------------\n\
         FROM python:{v}-slim-bookworm AS runtime\n\
         ENV PYTHONUNBUFFERED=1 \\\n    VIRTUAL_ENV=/venv \\\n    PATH=/venv/bin:$PATH \\\n    PORT=@@port@@\n\
         WORKDIR /app\n\
         # An unprivileged user (uid 1000), never root.\n\
         RUN useradd --create-home --uid 1000 app\n\
         COPY --from=build /venv /venv\n\
         COPY --from=build --chown=app:app /app ./\n\
         USER 1000:1000\n\
         EXPOSE @@port@@\n\
         {}\n",
        cmd(web)
    )
}

fn ruby(t: &Toolchain, v: &str, web: &str, assumptions: &mut Vec<String>) -> String {
    assumptions.push(
        "Bundler without the development and test groups; build-essential, libpq-dev and git in the build stage only, libpq5 at runtime (Debian's current packages: hadolint's version pinning, DL3008, is ignored for them with this reason)"
            .to_string(),
    );
    let node = if t.node_assets {
        assumptions.push(
            "package.json beside the Gemfile: Node.js and npm (Debian's) are in the build stage for the asset build, as the heroku/nodejs buildpack gave it; a build that calls yarn or bun needs it installed there"
                .to_string(),
        );
        " nodejs npm"
    } else {
        ""
    };
    let assets = if t.framework.as_deref() == Some("rails") {
        assumptions.push(
            "Rails' assets:precompile runs in the image, in production, with SECRET_KEY_BASE_DUMMY=1 (Rails 7.1+; older Rails: SECRET_KEY_BASE=any value), when the app has the task"
                .to_string(),
        );
        "# Only where the app has the task (an API-only app has none), as Heroku's buildpack does;\n\
         # an app that cannot even list its tasks fails the build here.\n\
         RUN tasks=\"$(SECRET_KEY_BASE_DUMMY=1 bin/rails -T assets:precompile)\" \\\n  && if [ -n \"$tasks\" ]; then SECRET_KEY_BASE_DUMMY=1 bin/rails assets:precompile; fi\n"
    } else {
        ""
    };
    format!(
        "\n# --- stage 1: build -------------------------------------------------------------------------\n\
         FROM ruby:{v}-slim-bookworm AS build\n\
         ENV BUNDLE_DEPLOYMENT=1 \\\n    BUNDLE_WITHOUT=development:test \\\n    BUNDLE_PATH=/usr/local/bundle \\\n    RAILS_ENV=production\n\
         WORKDIR /app\n\
         # hadolint ignore=DL3008\n\
         RUN apt-get update \\\n  && apt-get install -y --no-install-recommends build-essential libpq-dev git{node} \\\n  && rm -rf /var/lib/apt/lists/*\n\
         COPY Gemfile Gemfile.lock ./\n\
         RUN bundle install && rm -rf /usr/local/bundle/ruby/*/cache\n\
         COPY . .\n\
         {assets}\n\
         # --- stage 2: runtime -----------------------------------------------------------------------\n\
         FROM ruby:{v}-slim-bookworm AS runtime\n\
         ENV BUNDLE_DEPLOYMENT=1 \\\n    BUNDLE_WITHOUT=development:test \\\n    BUNDLE_PATH=/usr/local/bundle \\\n    RAILS_ENV=production \\\n    RAILS_LOG_TO_STDOUT=1 \\\n    RAILS_SERVE_STATIC_FILES=1 \\\n    PORT=@@port@@\n\
         WORKDIR /app\n\
         # hadolint ignore=DL3008\n\
         RUN apt-get update \\\n  && apt-get install -y --no-install-recommends libpq5 \\\n  && rm -rf /var/lib/apt/lists/* \\\n  && useradd --create-home --uid 1000 app\n\
         COPY --from=build /usr/local/bundle /usr/local/bundle\n\
         COPY --from=build --chown=app:app /app ./\n\
         # An unprivileged user (uid 1000), never root.\n\
         USER 1000:1000\n\
         EXPOSE @@port@@\n\
         {}\n",
        cmd(web)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn toolchain(ecosystem: &str, manager: &str) -> Toolchain {
        Toolchain {
            ecosystem: Some(ecosystem.to_string()),
            manager: Some(manager.to_string()),
            ..Toolchain::default()
        }
    }

    fn files(g: Generated) -> (String, String, Vec<String>) {
        match g {
            Generated::Files {
                dockerfile,
                dockerignore,
                assumptions,
            } => (dockerfile, dockerignore, assumptions),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn each_package_manager_installs_from_its_own_lockfile_and_runs_unprivileged() {
        let cases = [
            ("Node.js", "npm", "COPY package.json package-lock.json ./\nRUN npm ci\n"),
            ("Node.js", "yarn", "RUN yarn install --frozen-lockfile\n"),
            ("Node.js", "pnpm", "ENV COREPACK_HOME=/corepack\nRUN corepack enable\nCOPY package.json pnpm-lock.yaml ./\nRUN pnpm install --frozen-lockfile\n"),
            ("Python", "pip", "COPY requirements.txt ./\nRUN pip install --no-cache-dir -r requirements.txt\n"),
            ("Python", "Poetry", "poetry install --only main --no-root"),
            ("Python", "uv", "RUN uv sync --frozen --no-dev --no-install-project\n"),
            ("Python", "Pipenv", "pipenv requirements > /tmp/requirements.txt"),
            ("Ruby", "Bundler", "COPY Gemfile Gemfile.lock ./\nRUN bundle install"),
        ];
        for (ecosystem, manager, expected) in cases {
            let (d, _, _) = files(generate(
                "app",
                &toolchain(ecosystem, manager),
                Some("run it"),
            ));
            assert!(d.contains(expected), "{manager}: {expected}\n{d}");
            assert_eq!(d.matches("\nFROM ").count(), 2, "{manager}: two stages");
            let user = d.lines().rev().find(|l| l.starts_with("USER "));
            assert!(user.is_some_and(|u| u != "USER root"), "{manager}: {d}");
            assert!(
                d.trim_end()
                    .ends_with(r#"CMD ["/bin/sh", "-c", "exec run it"]"#),
                "{d}"
            );
        }
    }

    #[test]
    fn yarn_2_comes_through_corepack_and_keeps_only_production_dependencies() {
        let mut t = toolchain("Node.js", "yarn");
        t.yarn_berry = true;
        t.node_build = Some("build".to_string());
        let (d, _, _) = files(generate("app", &t, Some("yarn start")));
        assert!(
            d.contains(
                "COPY package.json yarn.lock .yarnrc.yml ./\nRUN yarn install --immutable\n"
            ),
            "{d}"
        );
        assert!(
            d.contains("yarn workspaces focus --all --production"),
            "{d}"
        );
        assert!(
            d.contains("COPY --from=build /corepack /corepack\nRUN corepack enable\n"),
            "{d}"
        );
    }

    #[test]
    fn heroku_postbuild_replaces_build_and_versions_come_from_the_repository() {
        let mut t = toolchain("Node.js", "yarn");
        t.node_build = Some("heroku-postbuild".to_string());
        t.version = Some(("18".to_string(), "package.json engines.node".to_string()));
        let (d, _, assumptions) = files(generate("app", &t, Some("yarn start")));
        assert!(d.contains("FROM node:18-bookworm AS build"), "{d}");
        assert!(
            d.contains("RUN yarn run heroku-postbuild && yarn install"),
            "{d}"
        );
        assert!(assumptions
            .iter()
            .any(|a| a == "Node.js 18 (package.json engines.node)"));
        let (d, _, assumptions) = files(generate("app", &toolchain("Ruby", "Bundler"), None));
        assert!(d.contains("FROM ruby:3.3-slim-bookworm AS build"));
        assert!(assumptions.iter().any(|a| a.contains("no web process")));
    }

    #[test]
    fn frameworks_build_their_assets_with_a_dummy_secret_and_an_own_image_is_kept() {
        let mut rails = toolchain("Ruby", "Bundler");
        rails.framework = Some("rails".to_string());
        rails.node_assets = true;
        let (d, ignore, _) = files(generate("app", &rails, Some("bundle exec puma")));
        assert!(
            d.contains("SECRET_KEY_BASE_DUMMY=1 bin/rails assets:precompile;"),
            "{d}"
        );
        assert!(
            d.contains("RAILS_ENV=production\nWORKDIR /app\n# hadolint"),
            "{d}"
        );
        assert!(d.contains("git nodejs npm"), "{d}");
        assert!(ignore.lines().any(|l| l == ".env") && ignore.contains("vendor/bundle/"));
        let mut django = toolchain("Python", "Poetry");
        django.framework = Some("django".to_string());
        let (d, _, _) = files(generate("app", &django, Some("gunicorn app.wsgi")));
        assert!(
            d.contains("python manage.py collectstatic --noinput"),
            "{d}"
        );
        let mut own = toolchain("Node.js", "pnpm");
        own.own_image = Some("Dockerfile".to_string());
        assert_eq!(
            generate("app", &own, None),
            Generated::Own("Dockerfile".to_string())
        );
        assert!(matches!(
            generate("app", &Toolchain::default(), None),
            Generated::Unknown(why) if why.contains("no lockfile")
        ));
    }
}
