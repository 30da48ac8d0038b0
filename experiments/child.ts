/**
 * Child processes (Deno, Python, git) started by the CLIs, the bench and the tests: their
 * environment, and the Python that has PyTorch.
 */

/** Variables a child inherits when this process may read them (the rest are left out). */
const PASSED = [
  "PATH",
  "HOME",
  "TMPDIR",
  "XDG_RUNTIME_DIR",
  "DENO_DIR",
  "DENO_NO_UPDATE_CHECK",
  "NPM_CONFIG_REGISTRY",
  "DENO_WEBGPU_BACKEND",
  "LISA_KERNELS",
  "VK_DRIVER_FILES",
  "VK_ICD_FILENAMES",
  "CUDA_VISIBLE_DEVICES",
  // Set on some machines because older OpenBLAS builds compute wrong results there: the PyTorch
  // peer and checks must run as Python would from the shell.
  "OPENBLAS_CORETYPE",
  "OPENBLAS_L2_SIZE",
  "LD_LIBRARY_PATH",
] as const;

function readable(name: string): string | undefined {
  try {
    return Deno.env.get(name);
  } catch {
    return undefined; // no --allow-env for it
  }
}

/**
 * The environment for a child (spawn it with `clearEnv: true`): the variables above that are set
 * and readable. Deno refuses to start a child that would inherit `LD_LIBRARY_PATH` (set on many
 * CUDA machines) unless `--allow-run` is unrestricted, so under a scoped `--allow-run` it is left out.
 */
export function childEnv(): Record<string, string> {
  const unrestricted = Deno.permissions.querySync({ name: "run" }).state === "granted";
  const env: Record<string, string> = {};
  for (const name of PASSED) {
    if (name.startsWith("LD_") && !unrestricted) continue;
    const v = readable(name);
    if (v !== undefined) env[name] = v;
  }
  return env;
}

/** Runs `cmd` with `args` in a clean child environment: its outputs, or why it could not start. */
export async function runChild(
  cmd: string,
  args: string[],
): Promise<{ ok: boolean; stdout: string; stderr: string } | { error: string }> {
  try {
    const out = await new Deno.Command(cmd, {
      args,
      clearEnv: true,
      env: childEnv(),
      stdout: "piped",
      stderr: "piped",
      stdin: "null",
    }).output();
    const text = (b: Uint8Array) => new TextDecoder().decode(b).trim();
    return { ok: out.success, stdout: text(out.stdout), stderr: text(out.stderr) };
  } catch (e) {
    return { error: e instanceof Error ? e.message.split("\n")[0] : String(e) };
  }
}

/** The Pythons tried for PyTorch, in order: the one on PATH, then Debian's. */
export const PYTHONS = ["python3", "/usr/bin/python3"] as const;

/** A Python with PyTorch, or why none was found. */
export type TorchPython =
  | { python: string; torch: string; cuda: string | null }
  | { python: null; reason: string };

let found: Promise<TorchPython> | null = null;

/**
 * The first of {@link PYTHONS} that imports torch, with torch's version and the CUDA device it sees
 * (null on CPU); else the reason for each candidate. Looked up once per process.
 */
export function findTorch(): Promise<TorchPython> {
  found ??= (async () => {
    const reasons: string[] = [];
    for (const python of PYTHONS) {
      const r = await runChild(python, [
        "-c",
        "import json, torch; c = torch.cuda.is_available(); " +
        "print(json.dumps([torch.__version__, torch.cuda.get_device_name(0) if c else None]))",
      ]);
      if ("error" in r) {
        reasons.push(`${python}: ${r.error}`);
      } else if (!r.ok) {
        reasons.push(`${python}: ${r.stderr.split("\n").pop() || "failed"}`);
      } else {
        const [torch, cuda] = JSON.parse(r.stdout) as [string, string | null];
        return { python, torch, cuda };
      }
    }
    return { python: null, reason: reasons.join("; ") };
  })();
  return found;
}

/** Runs a Python snippet with the PyTorch Python and returns its stdout, or null without one (or on error). */
export async function runPython(code: string): Promise<string | null> {
  const t = await findTorch();
  if (t.python === null) return null;
  const r = await runChild(t.python, ["-c", code]);
  return "error" in r || !r.ok ? null : r.stdout;
}
