import { test } from "uvu";
import * as assert from "uvu/assert";
import { spawnSync } from "node:child_process";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { ROOT, runCli } from "./helpers.js";

const page = readFileSync(join(ROOT, "man", "mlxs.1"), "utf8").replace(/\\-/g, "-");

test("every command and option that --help lists is in the manual page", async () => {
  const top = await runCli(["--help"]);
  const section = top.stdout.split("Commands:")[1].split("\n\n")[0];
  const commands = [...section.matchAll(/^  (\w+) /gm)].map((m) => m[1]).filter((c) => c !== "help");
  assert.ok(commands.length >= 2);
  for (const command of commands) {
    assert.ok(page.includes(`.B mlxs ${command}`) || page.includes(`.BR ${command} `), `command ${command}`);
    const help = await runCli([command, "--help"]);
    const flags = [...help.stdout.matchAll(/--[a-z][a-z-]+/g)].map((m) => m[0]);
    assert.ok(flags.length > 3);
    for (const flag of new Set(flags)) assert.ok(page.includes(flag), `${command} ${flag} is missing from man/mlxs.1`);
  }
  for (const flag of new Set([...top.stdout.matchAll(/--[a-z][a-z-]+/g)].map((m) => m[0]))) assert.ok(page.includes(flag), flag);
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
