/** Child processes start on machines that set LD_LIBRARY_PATH, and the PyTorch lookup says why it fails. */
import { equal, ok } from "node:assert/strict";
import { childEnv, findTorch, runChild } from "../../experiments/child.ts";

Deno.test("a Deno child starts while LD_LIBRARY_PATH is set, under the tests' scoped --allow-run", async () => {
  const before = Deno.env.get("LD_LIBRARY_PATH");
  Deno.env.set("LD_LIBRARY_PATH", "/nonexistent/cuda/lib64");
  try {
    ok(!("LD_LIBRARY_PATH" in childEnv()), "a scoped --allow-run cannot pass LD_* on");
    const out = await runChild("deno", ["eval", "console.log(40 + 2)"]);
    ok(!("error" in out), "error" in out ? out.error : "");
    ok(out.ok, out.stderr);
    equal(out.stdout, "42");
  } finally {
    if (before === undefined) Deno.env.delete("LD_LIBRARY_PATH");
    else Deno.env.set("LD_LIBRARY_PATH", before);
  }
});

Deno.test("a child that cannot start is reported with the reason, not thrown", async () => {
  const out = await runChild("/nonexistent/python3", ["-c", "1"]);
  ok("error" in out);
});

Deno.test("the PyTorch lookup names a Python with torch or says why each candidate failed", async () => {
  const t = await findTorch();
  if (t.python === null) {
    ok(t.reason.includes("python3:"), t.reason);
    ok(t.reason.includes("/usr/bin/python3:"), t.reason);
  } else {
    ok(/^\d+\.\d+/.test(t.torch), t.torch);
  }
});
