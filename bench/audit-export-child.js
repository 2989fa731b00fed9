// One export of a whole audit database as JSONL to /dev/null; prints rows, seconds and
// this process's peak RSS. Run by bench/audit.js.
import { createWriteStream } from "node:fs";
import { once } from "node:events";
import { devNull } from "node:os";
import { AuditStore } from "../dist/audit/store.js";
import { parseFilter } from "../dist/audit/filter.js";
import { exportRows } from "../dist/audit/export.js";
import { writeWithBackpressure } from "../dist/commands/io.js";

const store = await AuditStore.open(process.argv[2], { create: false });
const out = createWriteStream(devNull);
const started = performance.now();
const { count } = await exportRows(store, parseFilter({ order: "asc" }, { defaultLimit: null }), "jsonl", (text) => writeWithBackpressure(out, text));
out.end();
await once(out, "finish");
const seconds = (performance.now() - started) / 1000;
await store.close();
process.stdout.write(JSON.stringify({ count, seconds, maxRssKb: process.resourceUsage().maxRSS }));
