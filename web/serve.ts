/**
 * `deno task web [--port N] [--hostname H] [--no-build]`: bundles the page (web/app.ts with the core,
 * by `deno bundle --platform browser`) into web/dist/ with index.html and the Brown corpus as
 * data/brown.json, then serves web/dist on localhost with the right MIME types and prints the URL.
 * `data/tasks.json?preset=P&seed=S` gives the experiment's tasks for that preset and seed, made by
 * the same code as `deno task experiment` (experiments/tasks.ts).
 */
import { loadBrown } from "../core/data/corpora.ts";
import { flagNumber, parseFlags, runCli } from "../experiments/flags.ts";
import { PRESETS, scalePreset } from "../experiments/presets.ts";
import { makeTasks, type Task } from "../experiments/tasks.ts";
import { mimeType } from "./mime.ts";

/** Where the page is built, relative to the project root. */
export const DIST = new URL("./dist/", import.meta.url).pathname;

/** Bundles the page and writes web/dist (index.html, app.js, data/brown.json). */
export async function build(log: (m: string) => void = () => {}): Promise<void> {
  const web = new URL("./", import.meta.url).pathname;
  await Deno.mkdir(`${DIST}data`, { recursive: true });
  const t0 = performance.now();
  // "deno" as PATH has it (what the tasks allow to run), not Deno.execPath().
  const out = await new Deno.Command("deno", {
    args: ["bundle", "--quiet", "--platform", "browser", "--output", `${DIST}app.js`, `${web}app.ts`],
    stdout: "piped",
    stderr: "piped",
  }).output();
  if (!out.success) {
    throw new Error(`deno bundle web/app.ts failed:\n${new TextDecoder().decode(out.stderr).trim()}`);
  }
  await Deno.copyFile(`${web}index.html`, `${DIST}index.html`);
  await Deno.writeTextFile(`${DIST}data/brown.json`, JSON.stringify(await loadBrown()));
  log(`web: built ${DIST} in ${((performance.now() - t0) / 1000).toFixed(1)} s`);
}

const tasksCache = new Map<string, Promise<Task[]>>();

/** The experiment's tasks for `preset` and `seed` (as `deno task experiment --scale` makes them). */
function tasksFor(preset: string, seed: number, scale: number): Promise<Task[]> {
  if (!PRESETS[preset]) {
    throw new RangeError(
      `unknown preset ${JSON.stringify(preset)}; presets: ${Object.keys(PRESETS).join(", ")}`,
    );
  }
  const p = scalePreset(PRESETS[preset], scale);
  const key = `${preset}/${seed}/${scale}`;
  if (!tasksCache.has(key)) {
    tasksCache.set(key, makeTasks(p.experiment.tasks, seed, p.experiment.maxDefinitionChars));
  }
  return tasksCache.get(key)!;
}

/** Answers one request: the tasks endpoint, or a file of web/dist. */
export async function handle(req: Request): Promise<Response> {
  const url = new URL(req.url);
  if (url.pathname === "/data/tasks.json") {
    const seed = Number(url.searchParams.get("seed") ?? "0");
    try {
      if (!Number.isInteger(seed) || seed < 0) throw new RangeError(`seed ${url.searchParams.get("seed")}`);
      const scale = Number(url.searchParams.get("scale") ?? "1");
      const tasks = await tasksFor(url.searchParams.get("preset") ?? "tiny", seed, scale);
      return Response.json(tasks);
    } catch (e) {
      return new Response((e as Error).message, { status: 400 });
    }
  }
  const rel = url.pathname === "/" ? "index.html" : decodeURIComponent(url.pathname.slice(1));
  if (rel.split("/").includes("..")) return new Response("bad path", { status: 400 });
  try {
    const body = await Deno.readFile(`${DIST}${rel}`);
    return new Response(body, { headers: { "content-type": mimeType(rel), "cache-control": "no-store" } });
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) return new Response("not found", { status: 404 });
    throw e;
  }
}

/** Serves web/dist; port 0 picks a free one. */
export function serve(port: number, hostname = "127.0.0.1"): Deno.HttpServer<Deno.NetAddr> {
  return Deno.serve({ port, hostname, onListen: () => {} }, handle);
}

if (import.meta.main) {
  await runCli("web", "deno task web [--port N] [--hostname H] [--no-build]", async () => {
    const v = parseFlags(Deno.args, {
      port: { type: "string", default: "8000" },
      hostname: { type: "string", default: "127.0.0.1" },
      "no-build": { type: "boolean" },
    });
    if (!v["no-build"]) await build((m) => console.error(m));
    const server = serve(flagNumber("port", v.port, "integer"), v.hostname);
    console.log(`web: open http://${v.hostname}:${server.addr.port}/ (Ctrl-C stops)`);
    await server.finished;
  });
}
