/**
 * The host: how the core reaches files and environment variables, so that the core itself uses no
 * runtime API and runs in a browser. Files come in and go out as bytes. Under Deno the host is Deno's
 * file system and environment, with no setup; elsewhere it is an in-memory folder tree until
 * {@link setHost} installs another (a page's files from `File`/`fetch`, say).
 *
 * A host reports a path that does not exist with an error named `"NotFound"` (what Deno's
 * `NotFound` error is named too), which {@link isNotFound} recognizes.
 */

/** One entry of a folder. */
export interface DirEntry {
  /** The entry's name (no folder part). */
  name: string;
  /** A regular file. */
  isFile: boolean;
  /** A folder. */
  isDirectory: boolean;
}

/** What the core needs from its runtime: files as bytes, folders, renames, environment variables. */
export interface FileHost {
  /** The bytes of the file at `path`. */
  readFile(path: string): Promise<Uint8Array>;
  /** Writes `bytes` to `path`, created or replaced; its folder must exist. */
  writeFile(path: string, bytes: Uint8Array): Promise<void>;
  /** Moves a file or folder to `to`, replacing a file (or an empty folder) there. */
  rename(from: string, to: string): Promise<void>;
  /** Creates a folder; `recursive`: its parents too, and no error when it exists. */
  mkdir(path: string, options?: { recursive?: boolean }): Promise<void>;
  /** Removes a file or an empty folder; `recursive`: a folder with everything in it. */
  remove(path: string, options?: { recursive?: boolean }): Promise<void>;
  /** The entries of the folder at `path`, in no particular order. */
  readDir(path: string): Promise<DirEntry[]>;
  /** Whether `path` is a file or a folder. */
  stat(path: string): Promise<{ isFile: boolean; isDirectory: boolean }>;
  /** The environment variable `name`; undefined when unset or when the host may not read it. */
  env(name: string): string | undefined;
  /** Sets the environment variable `name` (the WebGPU backend is chosen through one). */
  setEnv(name: string, value: string): void;
  /** A number that tells this process's temporary files from another's (the process id under Deno). */
  readonly pid: number;
}

/** The error a host throws for a path that does not exist. */
export class NotFoundError extends Error {
  /** `"NotFound"`, which {@link isNotFound} looks for. */
  override name = "NotFound";
}

/** Whether `e` is a host's error for a path that does not exist. */
export function isNotFound(e: unknown): boolean {
  return e instanceof Error && e.name === "NotFound";
}

let current: FileHost | null = null;

/** The host the core reads and writes through: the one set last, else the runtime's own. */
export function getHost(): FileHost {
  return current ??= runtimeHost();
}

/** Makes `host` the one the core uses; returns the one it replaces (to put back after a test). */
export function setHost(host: FileHost): FileHost {
  const previous = getHost();
  current = host;
  return previous;
}

/** The bytes of the file at `path`, or null when there is none; other failures are thrown. */
export async function readFileOrNull(path: string): Promise<Uint8Array | null> {
  try {
    return await getHost().readFile(path);
  } catch (e) {
    if (isNotFound(e)) return null;
    throw e;
  }
}

/** Whether anything (file or folder) is at `path`. */
export function exists(path: string): Promise<boolean> {
  return getHost().stat(path).then(() => true, () => false);
}

/**
 * The part of Deno's namespace the Deno host calls, declared here so that the core compiles without
 * Deno's types (a browser build has no `Deno`).
 */
interface DenoApi {
  readFile(path: string): Promise<Uint8Array>;
  writeFile(path: string, data: Uint8Array): Promise<void>;
  rename(from: string, to: string): Promise<void>;
  mkdir(path: string, options?: { recursive?: boolean }): Promise<void>;
  remove(path: string, options?: { recursive?: boolean }): Promise<void>;
  readDir(path: string): AsyncIterable<DirEntry>;
  stat(path: string): Promise<{ isFile: boolean; isDirectory: boolean }>;
  env: { get(name: string): string | undefined; set(name: string, value: string): void };
  pid: number;
}

function runtimeHost(): FileHost {
  const deno = (globalThis as { Deno?: DenoApi }).Deno;
  return deno ? denoHost(deno) : memoryHost();
}

/**
 * Deno's file system and environment. Each call looks its function up on the namespace then, so a
 * test that wraps Deno's `writeFile` (to stop a write half-way) sees the core's writes.
 */
function denoHost(deno: DenoApi): FileHost {
  return {
    readFile: (path) => deno.readFile(path),
    writeFile: (path, bytes) => deno.writeFile(path, bytes),
    rename: (from, to) => deno.rename(from, to),
    mkdir: (path, options) => deno.mkdir(path, options),
    remove: (path, options) => deno.remove(path, options),
    async readDir(path) {
      const out: DirEntry[] = [];
      for await (const e of deno.readDir(path)) {
        out.push({ name: e.name, isFile: e.isFile, isDirectory: e.isDirectory });
      }
      return out;
    },
    stat: async (path) => {
      const s = await deno.stat(path);
      return { isFile: s.isFile, isDirectory: s.isDirectory };
    },
    env(name) {
      try {
        return deno.env.get(name);
      } catch {
        return undefined; // no --allow-env for it: as if unset
      }
    },
    setEnv: (name, value) => deno.env.set(name, value),
    get pid() {
      return deno.pid;
    },
  };
}

/** Initial contents of a {@link memoryHost}. */
export interface MemoryHostOptions {
  /** Files by path (text is stored as UTF-8); their folders are created. */
  files?: Record<string, Uint8Array | string>;
  /** Environment variables. */
  env?: Record<string, string>;
}

/**
 * A host that keeps files in memory: for tests and for a page, which puts the user's files in and
 * takes the written ones out (`readFile`) for download. Paths are `/`-separated; `.` and `..` parts
 * are resolved, and a relative path is relative to the tree's root. A write keeps a copy of the
 * caller's bytes; `readFile` gives the kept bytes themselves (no second copy of a model's weights).
 */
export function memoryHost(options: MemoryHostOptions = {}): FileHost {
  const files = new Map<string, Uint8Array>();
  const dirs = new Set<string>([".", "/"]);
  const env = new Map(Object.entries(options.env ?? {}));
  const fail = (what: string, op: string, path: string, name = "Error") =>
    Object.assign(new Error(`${what}: ${op} '${path}'`), { name });
  const notFound = (op: string, path: string) =>
    new NotFoundError(`No such file or directory: ${op} '${path}'`);
  const needParent = (op: string, path: string, p: string) => {
    if (!dirs.has(parentOf(p))) throw notFound(op, path);
  };
  /** Every path (file or folder) under folder `p`, at any depth. */
  const under = (p: string) => [...files.keys(), ...dirs].filter((q) => inside(p, q));
  const mkdirs = (p: string) => {
    for (let d = p; !dirs.has(d); d = parentOf(d)) {
      if (files.has(d)) throw fail("Not a directory", "mkdir", d);
      dirs.add(d);
    }
  };
  for (const [path, data] of Object.entries(options.files ?? {})) {
    const p = normalize(path);
    mkdirs(parentOf(p));
    files.set(p, typeof data === "string" ? new TextEncoder().encode(data) : data.slice());
  }
  const host = {
    readFile(path: string): Uint8Array {
      const bytes = files.get(normalize(path));
      if (!bytes) throw notFound("readfile", path);
      return bytes;
    },
    writeFile(path: string, bytes: Uint8Array): void {
      const p = normalize(path);
      if (dirs.has(p)) throw fail("Is a directory", "open", path);
      needParent("open", path, p);
      files.set(p, bytes.slice());
    },
    rename(from: string, to: string): void {
      const [f, t] = [normalize(from), normalize(to)];
      if (!files.has(f) && !dirs.has(f)) throw notFound("rename", from);
      needParent("rename", to, t);
      if (files.has(f)) {
        if (dirs.has(t)) throw fail("Is a directory", "rename", to);
        const bytes = files.get(f)!;
        files.delete(f);
        files.set(t, bytes);
        return;
      }
      if (f === t) return;
      if (files.has(t)) throw fail("Not a directory", "rename", to);
      if (inside(f, t)) throw fail("Invalid argument", "rename", to);
      if (under(t).length > 0) throw fail("Directory not empty", "rename", to);
      const moved = (p: string) => t + p.slice(f.length);
      for (const p of under(f)) {
        if (files.has(p)) {
          files.set(moved(p), files.get(p)!);
          files.delete(p);
        } else {
          dirs.add(moved(p));
          dirs.delete(p);
        }
      }
      dirs.delete(f);
      dirs.add(t);
    },
    mkdir(path: string, options?: { recursive?: boolean }): void {
      const p = normalize(path);
      if (options?.recursive && !files.has(p)) return mkdirs(p);
      if (dirs.has(p) || files.has(p)) throw fail("File exists", "mkdir", path, "AlreadyExists");
      needParent("mkdir", path, p);
      dirs.add(p);
    },
    remove(path: string, options?: { recursive?: boolean }): void {
      const p = normalize(path);
      if (files.delete(p)) return;
      if (!dirs.has(p)) throw notFound("remove", path);
      if (p === "." || p === "/") throw fail("Permission denied", "remove", path);
      const inner = under(p);
      if (inner.length > 0 && !options?.recursive) throw fail("Directory not empty", "remove", path);
      for (const q of [...inner, p]) {
        files.delete(q);
        dirs.delete(q);
      }
    },
    readDir(path: string): DirEntry[] {
      const p = normalize(path);
      if (files.has(p)) throw fail("Not a directory", "readdir", path);
      if (!dirs.has(p)) throw notFound("readdir", path);
      const entry = (q: string, isFile: boolean) => ({
        name: q.slice(q.lastIndexOf("/") + 1),
        isFile,
        isDirectory: !isFile,
      });
      return [
        ...[...dirs].filter((q) => q !== p && parentOf(q) === p).map((q) => entry(q, false)),
        ...[...files.keys()].filter((q) => parentOf(q) === p).map((q) => entry(q, true)),
      ];
    },
    stat(path: string): { isFile: boolean; isDirectory: boolean } {
      const p = normalize(path);
      if (files.has(p) || dirs.has(p)) return { isFile: files.has(p), isDirectory: dirs.has(p) };
      throw notFound("stat", path);
    },
  };
  // The file operations are synchronous here; a host's are promises, rejected on failure.
  const later = <A extends unknown[], T>(op: (...args: A) => T) => (...args: A): Promise<T> => {
    try {
      return Promise.resolve(op(...args));
    } catch (e) {
      return Promise.reject(e);
    }
  };
  return {
    readFile: later(host.readFile),
    writeFile: later(host.writeFile),
    rename: later(host.rename),
    mkdir: later(host.mkdir),
    remove: later(host.remove),
    readDir: later(host.readDir),
    stat: later(host.stat),
    env: (name) => env.get(name),
    setEnv: (name, value) => void env.set(name, value),
    pid: 1,
  };
}

/** Whether normalized `p` lies inside folder `dir` (at any depth). */
function inside(dir: string, p: string): boolean {
  return p !== dir && p.startsWith(dir === "/" ? "/" : dir === "." ? "" : `${dir}/`) &&
    (dir !== "." || !p.startsWith("/"));
}

/** `path` with empty, `.` and resolvable `..` parts removed: `.` for the relative root, `/` for the absolute one. */
function normalize(path: string): string {
  const parts: string[] = [];
  for (const part of path.split("/")) {
    if (part === "" || part === ".") continue;
    if (part === ".." && parts.length > 0 && parts[parts.length - 1] !== "..") parts.pop();
    else parts.push(part);
  }
  if (path.startsWith("/")) return "/" + parts.join("/");
  return parts.length > 0 ? parts.join("/") : ".";
}

/** The folder holding normalized `path`. */
function parentOf(path: string): string {
  const slash = path.lastIndexOf("/");
  if (slash < 0) return ".";
  return slash === 0 ? "/" : path.slice(0, slash);
}
