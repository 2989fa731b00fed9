// llama.cpp's own llama-server and llama-bench, built once from the llama.cpp source that
// node-llama-cpp ships (node_modules/node-llama-cpp/llama/gitRelease.bundle), so that mlxs
// is measured against the very llama.cpp it runs. Nothing is downloaded: cmake and g++
// build it (about 20 minutes on 2 cores, once) into a cache directory, reused while the
// node-llama-cpp release stays the same.
import { spawn, spawnSync } from "node:child_process";
import { existsSync, mkdirSync, readFileSync, readdirSync, rmSync, writeFileSync } from "node:fs";
import { homedir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";

const root = fileURLToPath(new URL("..", import.meta.url));
const llamaDir = join(root, "node_modules", "node-llama-cpp", "llama");

/** The llama.cpp release node-llama-cpp was built from, e.g. v0.4.0. */
export function llamaCppRelease() {
  return JSON.parse(readFileSync(join(llamaDir, "llama.cpp.info.json"), "utf8")).tag;
}

export function cacheDir() {
  return join(process.env.XDG_CACHE_HOME || join(homedir(), ".cache"), "mlxs", "bench", "llama.cpp");
}

/** Paths of llama-server and llama-bench, building them first if the cache lacks them. */
export async function llamaCppTools({ log = (line) => process.stderr.write(`${line}\n`) } = {}) {
  const dir = cacheDir();
  const bin = join(dir, "build", "bin");
  const stamp = join(dir, "build", "mlxs-release");
  const release = llamaCppRelease();
  const tools = { server: join(bin, "llama-server"), bench: join(bin, "llama-bench"), release, dir };
  if (existsSync(tools.server) && existsSync(tools.bench) && existsSync(stamp) && readFileSync(stamp, "utf8").trim() === release) return tools;

  log(`building llama-server and llama-bench ${release} from node-llama-cpp's bundled source into ${dir} (once; about 20 minutes on 2 cores)`);
  if (!existsSync(join(dir, ".git"))) {
    rmSync(dir, { recursive: true, force: true });
    mkdirSync(dir, { recursive: true });
    const clone = spawnSync("git", ["clone", "--quiet", join(llamaDir, "gitRelease.bundle"), dir], { encoding: "utf8" });
    if (clone.status !== 0) throw new Error(`git clone of the bundled llama.cpp failed: ${clone.stderr}`);
  }
  await run("cmake", ["-B", "build", "-DCMAKE_BUILD_TYPE=Release", "-DLLAMA_USE_PREBUILT_UI=OFF", "-DLLAMA_CURL=OFF", "-DLLAMA_BUILD_TESTS=OFF"], dir, log);
  await run("cmake", ["--build", "build", "-j", String(Math.max(1, (await import("node:os")).availableParallelism())), "--target", "llama-server", "llama-bench"], dir, log);
  writeFileSync(stamp, `${release}\n`);
  return tools;
}

/** Runs a build step, reporting its progress (cmake's "[ 42%]") on stderr at most every few seconds. */
function run(command, args, cwd, log) {
  return new Promise((resolve, reject) => {
    const child = spawn(command, args, { cwd, stdio: ["ignore", "pipe", "pipe"] });
    let tail = "";
    let lastShown = 0;
    const onData = (chunk) => {
      tail = (tail + chunk).slice(-4000);
      const percent = [...String(chunk).matchAll(/\[\s*(\d+)%\]/g)].at(-1)?.[1];
      if (percent !== undefined && Date.now() - lastShown > 5000) {
        lastShown = Date.now();
        log(`  llama.cpp build: ${percent}%`);
      }
    };
    child.stdout.on("data", onData);
    child.stderr.on("data", onData);
    child.on("error", reject);
    child.on("close", (code) => (code === 0 ? resolve() : reject(new Error(`${command} ${args.join(" ")} failed (exit ${code}):\n${tail}`))));
  });
}

/** The libggml CPU library a running process, or one of its children (mlxs's runners), loaded: which variant of the CPU backend it uses. */
export function loadedCpuBackend(pid) {
  const libs = new Set();
  for (const id of [pid, ...childrenOf(pid)]) {
    let maps = "";
    try { maps = readFileSync(`/proc/${id}/maps`, "utf8"); } catch { continue; }
    for (const path of maps.split("\n").map((l) => l.split(/\s+/).at(-1))) if (/libggml-cpu[^/]*\.so/.test(path ?? "")) libs.add(path.split("/").at(-1));
  }
  return [...libs].join(", ") || "none found";
}

function childrenOf(pid) {
  try {
    return readdirSync(`/proc/${pid}/task`).flatMap((task) => readFileSync(`/proc/${pid}/task/${task}/children`, "utf8").trim().split(/\s+/).filter(Boolean).map(Number));
  } catch {
    return [];
  }
}
