// The web page in a real browser: Debian's Chromium driven by Playwright. Run by
// httpapi's TestWebPageInARealBrowser, which starts the API over a whole pipeline and
// passes, in the environment: FLASHPIPE_URL, FLASHPIPE_TOKEN, FLASHPIPE_BAD_FILE (a
// file with a bad row), FLASHPIPE_GOOD_FILE (whose FLASHPIPE_FAILING_TERM always
// fails until the test fixes it), FLASHPIPE_SCREENSHOTS (a directory), CHROMIUM.
// Protocol with the Go test: this script prints "READY-FOR-RETRY" once it has seen
// the failed item, and waits for a line on standard input before pressing retry (the
// Go side clears the fault in between).
import assert from "node:assert/strict";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createInterface } from "node:readline";
import { chromium } from "playwright-core";

const env = (name) => {
  const v = process.env[name];
  if (!v) throw new Error(`${name} is not set`);
  return v;
};
const base = env("FLASHPIPE_URL");
const token = env("FLASHPIPE_TOKEN");
const badFile = env("FLASHPIPE_BAD_FILE");
const goodFile = env("FLASHPIPE_GOOD_FILE");
const failingTerm = env("FLASHPIPE_FAILING_TERM");
const shots = env("FLASHPIPE_SCREENSHOTS");
const step = (msg) => console.log(`ok - ${msg}`);
const stdin = createInterface({ input: process.stdin });
const nextLine = () => new Promise((resolve) => stdin.once("line", resolve));

// Each browser gets a fresh profile (Playwright passes it as --user-data-dir).
const profiles = [];
const launch = (options = {}) => {
  const profile = mkdtempSync(join(tmpdir(), "flashpipe-chromium-"));
  profiles.push(profile);
  return chromium.launchPersistentContext(profile, {
    executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
    args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
      "--disable-background-networking", "--disable-component-update", "--disable-sync"],
    ...options,
  });
};
const ctx = await launch({ acceptDownloads: true, viewport: { width: 1280, height: 900 } });
try {
  const page = await ctx.newPage();
  const errors = [];
  page.on("pageerror", (e) => errors.push(e.message));
  // The refusals the test asks for (login 401, bad rows 422, bad cap 400) are not errors.
  page.on("console", (m) => { if (m.type() === "error" && !/400|401|422/.test(m.text())) errors.push(m.text()); });

  // Not logged in: the login page and nothing else.
  await page.goto(`${base}/ui/`);
  await page.locator('input[name="token"]').waitFor();
  assert.equal(await page.locator("nav").count(), 0, "the login page shows no navigation");
  await page.screenshot({ path: join(shots, "login.png") });
  step("without a session, the login page");

  await page.fill('input[name="token"]', "not-the-right-token-000000");
  await page.click('button[type="submit"]');
  await page.getByText("This token is not valid.").waitFor();
  await page.fill('input[name="token"]', token);
  await page.click('button[type="submit"]');
  await page.waitForURL(`${base}/ui/`);
  await page.getByRole("heading", { name: "Batches" }).waitFor();
  step("log in with the token");

  // A file with a bad row: refused, the row named.
  await page.click('nav a[href="/ui/upload"]');
  await page.setInputFiles("#file", badFile);
  await page.click('form[action="/ui/upload"] button[type="submit"]');
  const err = page.locator("div.error");
  await err.waitFor();
  const errText = await err.innerText();
  assert.match(errText, /line 3: term is empty/, errText);
  assert.match(errText, /nothing was published/, errText);
  await page.screenshot({ path: join(shots, "upload-error.png"), fullPage: true });
  step("a file with a bad row is refused, row by row");

  // A good file: the batch page, whose progress reaches 100% by itself.
  await page.setInputFiles("#file", goodFile);
  await page.click('form[action="/ui/upload"] button[type="submit"]');
  await page.waitForURL(/\/ui\/batches\/[^/?]+\?notice=submitted$/);
  const batchPath = new URL(page.url()).pathname;
  await page.getByText("Batch submitted").waitFor();
  const seen = new Set();
  let shotRunning = false;
  const deadline = Date.now() + 120_000;
  for (;;) {
    const done = await page.evaluate(() => {
      const box = document.getElementById("progress");
      return { pct: box ? Number(box.querySelector("progress").value) : -1, reloaded: !location.search, state: box && box.dataset.state };
    }).catch(() => null); // the page may be reloading
    if (done) {
      seen.add(Math.round(done.pct));
      if (!shotRunning && done.pct > 0 && done.pct < 100) {
        await page.screenshot({ path: join(shots, "batch-running.png"), fullPage: true });
        shotRunning = true;
      }
      if (done.reloaded && done.state === "complete") break;
    }
    assert.ok(Date.now() < deadline, `the progress did not reach 100% (seen ${[...seen]})`);
    await page.waitForTimeout(100);
  }
  assert.equal(await page.locator("progress").evaluate((p) => p.value), 100);
  assert.equal(await page.locator('[data-field="percent"]').innerText(), "100%");
  assert.ok([...seen].some((p) => p > 0 && p < 100), `the bar moved while the batch ran (seen ${[...seen].sort((a, b) => a - b)})`);
  step(`the progress updated by itself to 100% (seen ${[...seen].sort((a, b) => a - b).join(" ")})`);

  // The failed item, with its stage, reason and next step.
  const failedRow = page.locator("table.failed tbody tr");
  assert.equal(await failedRow.count(), 1);
  const rowText = await failedRow.innerText();
  assert.ok(rowText.includes(failingTerm) && /stage1/.test(rowText) && /HTTP 400/.test(rowText) && /fix the input/.test(rowText), rowText);
  await page.screenshot({ path: join(shots, "batch.png"), fullPage: true });
  step("the failed item is shown with its stage, reason and next step");

  // Retry, once the Go side has fixed the cause.
  console.log("READY-FOR-RETRY");
  await nextLine();
  await page.click('form[action$="/retry"] button');
  await page.waitForURL(/notice=retry$/);
  await page.getByText("Retry started").waitFor();
  // Done once a page rendered after the retry's completion shows no failed row (the
  // script reloads the page when the progress stream says the store holds it).
  await page.waitForFunction(() => {
    const box = document.getElementById("progress");
    return box && box.dataset.state === "complete" && document.querySelectorAll("table.failed tbody tr").length === 0;
  }, null, { timeout: 120_000, polling: 100 });
  assert.equal(await page.locator('[data-field="failed"]').innerText(), "0");
  await page.screenshot({ path: join(shots, "batch-retried.png"), fullPage: true });
  step("retry ran the failed item again: nothing failed");

  // Download the TSV.
  const [download] = await Promise.all([page.waitForEvent("download"), page.click('a[href$="format=tsv"]')]);
  const tsvPath = join(profiles[0], "cards.tsv");
  await download.saveAs(tsvPath);
  const tsv = readFileSync(tsvPath, "utf8").split("\n").filter(Boolean);
  assert.equal(tsv[0], "position\tterm\tterm_number\ttab_name\tprimer\tfront\tback\ttags\thonorific_level");
  assert.ok(tsv.length > 3 && tsv.some((l) => l.includes(failingTerm)), `the TSV has ${tsv.length} lines`);
  assert.match(download.suggestedFilename(), /\.tsv$/);
  step(`downloaded ${download.suggestedFilename()}: ${tsv.length - 1} cards`);

  // The spend card: no cap yet; a bad amount is refused on the page, a good one set.
  const spend = page.locator("#spend");
  assert.match(await spend.innerText(), /No spend cap/);
  await page.fill("#max_cost", "lots");
  await page.click('form[action$="/cap"] button');
  await page.locator('[data-field="cap-error"]').waitFor();
  assert.match(await page.locator('[data-field="cap-error"]').innerText(), /"lots" is not an amount of USD/);
  assert.equal(await page.inputValue("#max_cost"), "lots");
  await page.fill("#max_cost", "2.50");
  await page.click('form[action$="/cap"] button');
  await page.waitForURL(/notice=cap$/);
  await page.getByText("Spend cap set").waitFor();
  assert.equal(await page.locator('#spend [data-field="cap"]').innerText(), "$2.50");
  assert.equal(await page.locator('#spend [data-field="cap-state"]').innerText(), "within cap");
  assert.match(await page.locator('[data-field="cost"]').innerText(), /^\$\d/, "the cost stays shown");
  assert.match(await spend.innerText(), /spent before the cap was set/, "what the batch spent before its cap counts against it");
  await spend.screenshot({ path: join(shots, "spend.png") });
  step("a bad cap is refused on the page; a cap set from the page is shown");

  await page.click('nav a[href="/ui/"]');
  await page.locator("table.batches").waitFor();
  assert.ok((await page.locator("table.batches").innerText()).includes(batchPath.split("/").pop()));
  assert.equal(await page.locator('table.batches [data-field="mode"]').first().innerText(), "default");
  await page.screenshot({ path: join(shots, "batches.png"), fullPage: true });
  step("the batches list shows the batch");

  // On a phone: nothing wider than the screen.
  const phone = await ctx.newPage();
  await phone.setViewportSize({ width: 390, height: 844 });
  for (const [path, name] of [[batchPath, "batch-phone.png"], ["/ui/", "batches-phone.png"]]) {
    await phone.goto(base + path);
    const width = await phone.evaluate(() => document.documentElement.scrollWidth);
    assert.ok(width <= 391, `${path} is ${width}px wide on a 390px phone`);
    await phone.screenshot({ path: join(shots, name), fullPage: true });
  }
  step("readable on a phone (no horizontal scrolling)");

  // Another browser without the cookie: nothing but the login page.
  const anon = await launch();
  const other = await anon.newPage();
  const resp = await other.goto(base + batchPath);
  assert.equal(resp.status(), 401);
  await other.locator('input[name="token"]').waitFor();
  const visible = await other.locator("body").innerText();
  assert.ok(!visible.includes("Export") && !visible.includes(failingTerm), visible);
  await anon.close();
  step("without the cookie, a batch page is the login page");

  // Log out.
  await page.click("nav button");
  await page.waitForURL(`${base}/ui/login`);
  await page.goto(base + batchPath);
  await page.locator('input[name="token"]').waitFor();
  step("logged out");

  assert.deepEqual(errors, [], "no script errors");
} finally {
  await ctx.close();
  stdin.close();
  for (const p of profiles) rmSync(p, { recursive: true, force: true });
}
