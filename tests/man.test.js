import { test } from "uvu";
import * as assert from "uvu/assert";
import { spawnSync } from "node:child_process";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { ROOT, helpTexts } from "./helpers.js";

const page = readFileSync(join(ROOT, "man", "mlxs.1"), "utf8").replace(/\\-/g, "-");

test("every command and option that --help lists is in the manual page", async () => {
  const texts = await helpTexts();
  const names = texts.map(({ path }) => path.join(" ")).filter(Boolean);
  for (const expected of ["chat", "embed", "serve", "audit", "audit tail", "audit prune", "audit export", "audit stats"]) assert.ok(names.includes(expected), expected);
  for (const { path, stdout: help } of texts) {
    if (path.length > 0) assert.ok(page.includes(`mlxs ${path.join(" ")}`), `command "mlxs ${path.join(" ")}" is missing from man/mlxs.1`);
    for (const flag of new Set([...help.matchAll(/--[a-z][a-z-]+/g)].map((m) => m[0]))) {
      assert.ok(page.includes(flag), `${path.join(" ") || "mlxs"} ${flag} is missing from man/mlxs.1`);
    }
  }
});

test("the manual page renders without groff warnings", () => {
  const groff = spawnSync("groff", ["-man", "-ww", "-z", join(ROOT, "man", "mlxs.1")], { encoding: "utf8" });
  if (groff.error) {
    // groff is part of man-db on Debian; without it, at least the page must be roff
    assert.match(page, /^\.TH MLXS 1/);
    return;
  }
  assert.is(groff.status, 0);
  assert.is(groff.stderr, "");
});

test.run();
