// The console in a real browser: Debian's headless Chromium, driven by playwright-core, as a
// panel member and a policy lead would use it — by labels, roles and the keyboard, not by
// CSS selectors. Each page is checked with axe-core (WCAG 2.2 A/AA rules): no serious or
// critical violation may remain. Screenshots go to target/screenshots/.
//
// Usage: CONSOLE_URL=http://127.0.0.1:PORT node console.test.mjs   (run by .ci/browser)

import { chromium } from "playwright-core";
import { createRequire } from "node:module";
import { mkdirSync, rmSync } from "node:fs";
import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve, dirname } from "node:path";
import { fileURLToPath } from "node:url";
import assert from "node:assert/strict";

const require = createRequire(import.meta.url);
const axeSource = require("axe-core").source;
const here = dirname(fileURLToPath(import.meta.url));
const shots = resolve(here, "../../target/screenshots");
mkdirSync(shots, { recursive: true });
const base = process.env.CONSOLE_URL;
if (!base) throw new Error("set CONSOLE_URL to the console's address");

const profile = mkdtempSync(join(tmpdir(), "cpc-chromium-"));
// A fresh, empty profile each run; without the background-networking flags Chromium keeps
// trying to reach Google's hosts, which this machine's closed network refuses.
const context = await chromium.launchPersistentContext(profile, {
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  headless: true,
  viewport: { width: 1200, height: 900 },
  args: ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync"],
});

let failures = 0;
const results = [];
async function step(name, fn) {
  const started = Date.now();
  try {
    await fn();
    results.push(`ok   ${name} (${Date.now() - started} ms)`);
  } catch (e) {
    failures++;
    results.push(`FAIL ${name}: ${e.stack || e}`);
  }
}

/** Runs axe-core (injected through the DevTools protocol, so the page's CSP still holds). */
async function axe(page, label) {
  await page.evaluate(axeSource);
  const r = await page.evaluate(() => axe.run(document, { runOnly: { type: "tag", values: ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa", "wcag22aa", "best-practice"] } }));
  const bad = r.violations.filter((v) => v.impact === "serious" || v.impact === "critical");
  const minor = r.violations.filter((v) => !(v.impact === "serious" || v.impact === "critical"));
  for (const v of minor) results.push(`     axe (${label}): ${v.impact} ${v.id} — ${v.help} (${v.nodes.length})`);
  assert.equal(bad.length, 0, `axe found serious/critical violations on ${label}:\n` +
    bad.map((v) => `${v.impact} ${v.id}: ${v.help}\n  ${v.nodes.map((n) => n.target.join(" ")).join("\n  ")}`).join("\n"));
  results.push(`     axe (${label}): ${r.passes.length} rules passed, no serious or critical violation`);
}

const page = context.pages()[0] ?? await context.newPage();
const cspErrors = [];
// Console errors: a CSP violation, a script error or a missing resource. A form answered with
// 422 (problems in the facts) is expected, not an error.
page.on("console", (m) => { if (m.type() === "error" && !/status of 422/.test(m.text())) cspErrors.push(m.text()); });
page.on("pageerror", (e) => cspErrors.push(String(e)));

await step("partnerships page: what is live, with a skip link first in the tab order", async () => {
  await page.goto(`${base}/`);
  await page.getByRole("heading", { level: 1, name: "Partnerships" }).waitFor();
  for (const name of ["City of York", "North Yorkshire", "Barnsley", "Norfolk", "Central Bedfordshire"]) {
    assert.ok(await page.getByRole("heading", { level: 2, name: new RegExp(name) }).count() >= 1, `${name} is listed`);
  }
  assert.ok(await page.getByText("Live revision").count() >= 5);
  await page.keyboard.press("Tab");
  const focused = await page.evaluate(() => document.activeElement.textContent);
  assert.equal(focused, "Skip to main content");
  await page.keyboard.press("Enter");
  assert.equal(await page.evaluate(() => document.activeElement.id), "main");
  await axe(page, "partnerships");
  await page.screenshot({ path: `${shots}/partnerships.png`, fullPage: true });
});

await step("Stage 2 admissibility: a panel member enters a complaint and reads the answer", async () => {
  await page.goto(`${base}/admissibility`);
  await axe(page, "admissibility form");
  await page.getByLabel("Partnership").selectOption({ label: "City of York" });
  await page.getByLabel("Complainant").selectOption({ label: "Parent" });
  const g1 = page.getByRole("group", { name: "Ground 1" });
  await g1.getByLabel("Category").selectOption({ label: "The decision to make (or not make) a plan" });
  await g1.getByLabel("Description").fill("The plan was made without anyone listening to me.");
  const g2 = page.getByRole("group", { name: "Ground 2" });
  await g2.getByLabel("Category").selectOption({ label: "A professional's conduct" });
  await g2.getByLabel("Description").fill("The social worker was rude to my mother at the meeting.");
  await page.getByRole("group", { name: "Stage 1 completed" }).getByLabel("Yes", { exact: true }).check();
  await page.getByRole("group", { name: "Says which aspects meet the criteria" }).getByLabel("Yes", { exact: true }).check();
  await page.getByLabel("Still dissatisfied about").fill("The decision to make a plan.");
  await page.getByLabel("Solution sought").fill("A new conference with a different chair.");
  await page.getByRole("button", { name: "Check admissibility" }).click();
  await page.getByRole("heading", { level: 1, name: /Stage 2 admissibility: Partly eligible/ }).waitFor();
  const rows = page.getByRole("table", { name: "Each ground and where it goes" }).getByRole("row");
  assert.equal(await rows.count(), 3, "a header row and one row per ground");
  const first = await rows.nth(1).innerText();
  assert.match(first, /^1\s/, "grounds are numbered from 1");
  assert.match(first, /The plan was made without anyone listening to me\./);
  assert.match(first, /Stage 2 complaints panel/);
  const second = await rows.nth(2).innerText();
  assert.match(second, /^2\s/);
  assert.match(second, /A professional's conduct/);
  assert.match(second, /agency's own complaints procedure/);
  await page.getByRole("heading", { name: "What the panel may recommend" }).waitFor();
  await page.getByRole("heading", { name: "What is missing" }).waitFor();
  assert.ok(await page.getByText("Assumption", { exact: true }).count() >= 1, "assumptions are marked in words");
  assert.equal(await page.getByRole("button", { name: "Print this record" }).isVisible(), true, "the script reveals the print button");
  await axe(page, "admissibility result");
  await page.screenshot({ path: `${shots}/admissibility.png`, fullPage: true });
  await page.locator("section.admissibility").screenshot({ path: `${shots}/admissibility-result.png` });
  await page.emulateMedia({ media: "print" });
  assert.equal(await page.getByRole("navigation", { name: "Main" }).isVisible(), false, "print hides the navigation");
  assert.equal(await page.getByRole("button", { name: "Check admissibility" }).isVisible(), false, "print hides the form");
  await page.screenshot({ path: `${shots}/admissibility-print.png`, fullPage: true });
  await page.pdf({ path: `${shots}/admissibility.pdf`, format: "A4", printBackground: true });
  await page.emulateMedia({ media: "screen" });
});

let decisionId = "";

await step("Make a decision: a missing fact is an error tied to its field, then the decision", async () => {
  await page.goto(`${base}/decide`);
  await page.getByRole("link", { name: "Attendance with City of York's rules" }).click();
  await page.getByRole("heading", { level: 1, name: /Attendance: City of York/ }).waitFor();
  await page.getByLabel("Role").selectOption({ label: "Parent" });
  await page.getByRole("button", { name: "Make the decision" }).click();
  const summary = page.getByRole("alert");
  await summary.getByRole("heading", { name: "There is a problem" }).waitFor();
  assert.equal(await page.evaluate(() => document.activeElement.id), "error-summary", "focus moves to the problems");
  const link = summary.getByRole("link", { name: /Part of the conference/ });
  await link.click();
  const select = page.getByLabel("Part of the conference");
  const describedBy = await select.getAttribute("aria-describedby");
  assert.ok(describedBy.includes("f-session-error"), `the field is described by its error (${describedBy})`);
  assert.match(await page.locator("#f-session-error").innerText(), /Part of the conference: is needed/);
  assert.equal(await select.getAttribute("aria-invalid"), "true");
  await axe(page, "decision form with an error");
  await page.screenshot({ path: `${shots}/decision-error.png`, fullPage: true });
  await select.selectOption({ label: "The whole conference" });
  await page.getByRole("group", { name: "Wishes to give views" }).getByLabel("Yes", { exact: true }).check();
  await page.getByRole("group", { name: "Intends to attend" }).getByLabel("No", { exact: true }).check();
  await page.getByRole("button", { name: "Make the decision" }).click();
  await page.getByRole("heading", { name: "The decision" }).waitFor();
  assert.match(await page.locator(".outcome").innerText(), /Outcome: Proceed without/);
  assert.ok(await page.getByText(/Rests on:/).count() >= 1, "reasons cite their guide");
  assert.ok(await page.getByRole("heading", { name: "What happens next" }).count() === 1);
  await axe(page, "decision result");
  await page.screenshot({ path: `${shots}/decision.png`, fullPage: true });
  decisionId = (await page.locator("dl.meta code").first().innerText()).trim();
  assert.match(decisionId, /^[0-9a-f-]{36}$/, "the decision shows its id");
});

await step("Compare partnerships, Assumptions and Look up a decision", async () => {
  await page.goto(`${base}/compare`);
  await page.getByRole("table", { name: /Outcome of each standard scenario/ }).waitFor();
  await axe(page, "compare");
  await page.screenshot({ path: `${shots}/compare.png`, fullPage: true });
  await page.goto(`${base}/assumptions`);
  assert.ok(await page.getByRole("table").count() >= 1);
  await axe(page, "assumptions");
  // The decision just made is in the decision record: found by its id, and replayed.
  await page.goto(`${base}/decisions`);
  await page.getByLabel("Decision id").fill(decisionId);
  await page.getByRole("button", { name: "Look up" }).click();
  await page.getByRole("heading", { name: "The decision" }).waitFor();
  assert.match(await page.locator(".outcome").innerText(), /Outcome: Proceed without/);
  await axe(page, "look up");
  await page.getByRole("button", { name: "Replay with today's rules" }).click();
  await page.getByText("rules make the same decision").waitFor();
  await axe(page, "replay");
  await page.screenshot({ path: `${shots}/replay.png`, fullPage: true });
});

await step("no Content-Security-Policy violation or script error", async () => {
  assert.deepEqual(cspErrors, []);
});

await context.close();
rmSync(profile, { recursive: true, force: true });
console.log(results.join("\n"));
console.log(failures ? `${failures} browser check(s) failed` : "all browser checks passed");
process.exit(failures ? 1 : 0);
