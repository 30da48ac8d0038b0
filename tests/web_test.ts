/**
 * The web page in a real browser: `deno task web`'s build served here, opened in headless Chromium
 * (SwiftShader's WebGPU, no GPU needed) through puppeteer-core. Runs the tiny comparison (reduced with
 * ?scale=0.25, as `deno task experiment --scale 0.25` reduces it), checks what the page shows and
 * offers, and compares its numbers with the same comparison run here in Deno; then that a malformed
 * model file gives a message on the page, not a dead page. Ignored
 * where /usr/bin/chromium is missing (.ci/setup installs it).
 */
import { deepEqual, equal, ok } from "node:assert/strict";
import puppeteer, { type Page } from "puppeteer-core";
import { configToHF } from "../core/io/hf.ts";
import { build, serve } from "../web/serve.ts";
import { experiment } from "../experiments/main.ts";
import { testGpu } from "./helpers.ts";

// What the page's own functions (run in the browser by page.evaluate) touch of the DOM; declared here
// because the DOM's types would change the whole test program's (the tests type-check together).
interface PageElement {
  textContent: string | null;
  innerText: string;
  innerHTML: string;
  href: string;
  disabled: boolean;
  children: PageElement[];
}
declare const document: {
  body: { dataset: Record<string, string | undefined>; innerText: string };
  getElementById(id: string): PageElement;
};

const CHROMIUM = "/usr/bin/chromium";

/** The top-level keys of `deno task experiment`'s results.json, in its order. */
const CLI_RESULTS_KEYS = [
  "complete",
  "config",
  "env",
  "methods",
  "weightNormSkew",
  "base",
  "beforeFineTuning",
  "majorityAnswer",
  "claimRule",
  "splits",
  "lrSweep",
  "learningRates",
  "policies",
  "claims",
  "ablations",
  "verified",
  "seconds",
  "runs",
];
const hasChromium = await Deno.stat(CHROMIUM).then(() => true, () => false);

async function openPage(url: string): Promise<{ page: Page; close: () => Promise<void>; errors: string[] }> {
  const browser = await puppeteer.launch({
    executablePath: CHROMIUM,
    args: ["--headless=new", "--no-sandbox", "--enable-unsafe-webgpu", "--enable-unsafe-swiftshader"],
  });
  const page = await browser.newPage();
  const errors: string[] = [];
  page.on("pageerror", (e) => errors.push(String(e)));
  await page.goto(url);
  await page.waitForFunction(() => document.body.dataset.state !== undefined, { timeout: 60_000 });
  return { page, close: () => browser.close(), errors };
}

const state = (page: Page) => page.evaluate(() => document.body.dataset.state);

Deno.test({
  name:
    "the page runs the tiny comparison in headless Chromium: every method, finite losses, LISA's optimizer state below full's, the CLI's results.json and report, Deno's test losses",
  ignore: !hasChromium,
  sanitizeOps: false,
  sanitizeResources: false,
  fn: async () => {
    await build();
    const server = serve(0);
    const { page, close, errors } = await openPage(`http://127.0.0.1:${server.addr.port}/?scale=0.25`);
    try {
      equal(await state(page), "ready", `the adapter: ${await page.evaluate(() => document.body.innerText)}`);
      ok((await page.$eval("#adapter", (e) => e.textContent))!.includes("max storage binding"));
      await page.click("#run");
      await page.waitForFunction(() => ["done", "error"].includes(document.body.dataset.state!), {
        timeout: 400_000,
      });
      equal(await state(page), "done", await page.$eval("#error", (e) => e.textContent ?? ""));
      const rows = await page.$$eval(
        "#results tr",
        (trs) => trs.slice(1).map((tr) => tr.children[0].textContent),
      );
      for (const label of ["full", "LoRA r=8", "LISA E+H+2L"]) {
        ok(rows.includes(label), `${label} in ${rows}`);
      }
      for (
        const id of [
          "pretrain-chart",
          "loss-definitions",
          "loss-arithmetic",
          "memory-chart",
          "optimizer-chart",
          "category-chart",
        ]
      ) {
        ok(await page.$eval(`#${id}`, (e) => e.innerHTML.includes("<svg")), `${id} has a chart`);
      }
      const download = (id: string) =>
        page.evaluate(async (id) => await (await fetch(document.getElementById(id).href)).text(), id);
      const r = JSON.parse(await download("download-results-json"));
      // The schema of the CLI's results.json (experiments/report.ts), key for key.
      deepEqual(Object.keys(r), CLI_RESULTS_KEYS);
      equal(r.complete, true);
      equal(r.config.preset, "tiny");
      equal(r.config.scale, 0.25);
      ok(r.base.valLoss < Math.log(256) - 0.5, `pretraining lowers the loss from ln 256: ${r.base.valLoss}`);
      for (
        const [key, m] of Object.entries(r.methods) as [
          string,
          { tasks: Record<string, { trainLoss: number[] }> },
        ][]
      ) {
        for (const [task, t] of Object.entries(m.tasks)) {
          ok(t.trainLoss.length > 0 && t.trainLoss.every(Number.isFinite), `${key} ${task} losses`);
        }
      }
      const opt = (k: string) => r.methods[k].tasks.definitions.memory.peak.optimizer;
      ok(opt("lisa_1l") < opt("full"), `LISA E+H+1L optimizer ${opt("lisa_1l")} < full ${opt("full")}`);
      ok(opt("lora") < opt("lisa_1l"), "LoRA holds the least optimizer state");
      ok(Object.keys(r.runs).length > 0 && r.claims.length > 0);
      ok(
        (await download("download-report-md")).startsWith("# LISA vs LoRA vs full fine-tuning — tiny preset"),
      );
      // The same comparison in Deno (this adapter, the same kernel family): the same configuration and
      // runs, test losses within 0.5% (measured between SwiftShader and lavapipe on the whole tiny
      // comparison: at most 0.095%), the same accuracies.
      const out = await Deno.makeTempDir({ prefix: "lisa-web-deno-" });
      const { record } = await experiment({
        preset: "tiny",
        scale: 0.25,
        out,
        fresh: true,
        quiet: true,
        gpu: await testGpu(),
        command: "test",
      });
      await Deno.remove(out, { recursive: true });
      equal(r.config.configHash, record.configHash);
      equal(r.env.kernels, record.env.kernels, "the same kernel family");
      for (const [key, m] of Object.entries(record.runs)) {
        for (const task of ["definitions", "arithmetic"] as const) {
          const page = r.methods[key].tasks[task], deno = m[task];
          ok(
            Math.abs(page.evalLoss - deno.evalLoss) <= 5e-3 * deno.evalLoss,
            `${key} ${task}: page ${page.evalLoss}, Deno ${deno.evalLoss}`,
          );
          equal(page.accuracy, deno.accuracy, `${key} ${task} accuracy`);
        }
      }
      for (
        const id of [
          "download-full-model-safetensors",
          "download-lora-adapter_config-json",
          "download-lisa-config-json",
        ]
      ) {
        ok(await page.$(`#${id}`), `a download ${id}`);
      }
      equal(errors.length, 0, errors.join("\n"));
    } finally {
      await close();
      await server.shutdown();
    }
  },
});

Deno.test({
  name: "a malformed model file gives a message on the page, naming the file, and the page stays usable",
  ignore: !hasChromium,
  sanitizeOps: false,
  sanitizeResources: false,
  fn: async () => {
    await build();
    const server = serve(0);
    const dir = await Deno.makeTempDir({ prefix: "lisa-web-" });
    const { page, close, errors } = await openPage(`http://127.0.0.1:${server.addr.port}/`);
    try {
      const config = configToHF({ vocabSize: 256, blockSize: 64, nLayer: 1, nHead: 2, nEmbd: 16 });
      await Deno.writeTextFile(`${dir}/config.json`, JSON.stringify(config));
      // A header length far beyond the file: what a truncated download looks like.
      await Deno.writeFile(
        `${dir}/model.safetensors`,
        new Uint8Array([255, 255, 0, 0, 0, 0, 0, 0, 123, 125]),
      );
      const input = await page.$("input#base-files");
      await input!.uploadFile(`${dir}/config.json`, `${dir}/model.safetensors`);
      await page.click("#run");
      await page.waitForFunction(() => ["done", "error"].includes(document.body.dataset.state!), {
        timeout: 60_000,
      });
      equal(await state(page), "error");
      const message = await page.$eval("#error", (e) => e.textContent ?? "");
      ok(/model\.safetensors/.test(message), message);
      ok(
        await page.$eval("#run", (b) => !(b as unknown as PageElement).disabled),
        "the Run button works again",
      );
      equal(errors.length, 0, errors.join("\n"));
    } finally {
      await close();
      await server.shutdown();
      await Deno.remove(dir, { recursive: true });
    }
  },
});
