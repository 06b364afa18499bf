/**
 * The directory listing in a real browser (Debian's Chromium driven by playwright-core): the
 * table renders with directories first, a click on a file opens or downloads it, a click on
 * a subdirectory lists it, and the parent link goes back up.
 */
import assert from "node:assert/strict";
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, test } from "node:test";
import { chromium, type Browser, type Page } from "playwright-core";
import { serve, type Running } from "../helpers";
import { File } from "../../src/static";

const CHROMIUM = process.env.CHROMIUM_PATH ?? "/usr/bin/chromium";
const dir = mkdtempSync(join(tmpdir(), "trellis-browser-"));
const payload = Buffer.from(Array.from({ length: 5000 }, (_, i) => i & 0xff));
let s: Running;
let browser: Browser;
let page: Page;

before(async () => {
  assert.ok(existsSync(CHROMIUM), `${CHROMIUM} not found: install the chromium package (apt-get install chromium) or set CHROMIUM_PATH`);
  mkdirSync(join(dir, "sub dir"));
  mkdirSync(join(dir, "assets"));
  writeFileSync(join(dir, "readme.txt"), "Read me, I am plain text.");
  writeFileSync(join(dir, "a & b <c>.txt"), "ampersands");
  writeFileSync(join(dir, "data.bin"), payload);
  writeFileSync(join(dir, "sub dir", "inner.html"), "<!DOCTYPE html><title>inner</title><h1 id=inner>Inner page</h1>");
  writeFileSync(join(dir, "assets", "style.css"), "body{}");
  s = await serve(new File(dir));
  browser = await chromium.launch({
    executablePath: CHROMIUM,
    args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking", "--disable-component-update", "--disable-sync"],
  });
  const context = await browser.newContext({ acceptDownloads: true });
  page = await context.newPage();
});

after(async () => {
  await browser?.close();
  await s?.close();
  rmSync(dir, { recursive: true, force: true });
});

test("the listing renders as a table: directories first, then files, each sorted", async () => {
  await page.goto(s.base + "/");
  assert.equal(await page.title(), "Directory listing for /");
  assert.equal(await page.locator("h1").innerText(), "Directory listing for /");
  const names = await page.locator("table tbody tr td.name a").allInnerTexts();
  assert.deepEqual(names, ["assets/", "sub dir/", "a & b <c>.txt", "data.bin", "readme.txt"]);
  const headers = await page.locator("table thead th").allInnerTexts();
  assert.deepEqual(
    headers.map((h) => h.trim().toLowerCase()),
    ["name", "size", "type", "encoding", "modified"],
  );
  const row = page.locator("tr", { hasText: "data.bin" });
  assert.equal((await row.locator("td.size").innerText()).trim(), "4.9 KiB");
  assert.equal((await row.locator("td.type").innerText()).trim(), "application/octet-stream");
  // The stylesheet applied (the browser's default is separate borders).
  const collapse = await page.locator("table").evaluate((t) => (globalThis as unknown as { getComputedStyle(e: unknown): { borderCollapse: string } }).getComputedStyle(t).borderCollapse);
  assert.equal(collapse, "collapse");
});

test("a click on a text file opens it", async () => {
  await page.goto(s.base + "/");
  await Promise.all([page.waitForURL(s.base + "/readme.txt"), page.locator("a", { hasText: "readme.txt" }).click()]);
  assert.equal((await page.locator("body").innerText()).trim(), "Read me, I am plain text.");
  await page.goto(s.base + "/");
  await Promise.all([page.waitForURL(/a%20%26%20b%20%3Cc%3E\.txt$/), page.locator("a", { hasText: "a & b <c>.txt" }).click()]);
  assert.equal((await page.locator("body").innerText()).trim(), "ampersands");
});

test("a click on a binary file downloads exactly its bytes", async () => {
  await page.goto(s.base + "/");
  const [download] = await Promise.all([page.waitForEvent("download"), page.locator("a", { hasText: "data.bin" }).click()]);
  assert.equal(download.suggestedFilename(), "data.bin");
  const path = await download.path();
  assert.ok(readFileSync(path).equals(payload));
});

test("a click on a subdirectory lists it; the parent link goes back", async () => {
  await page.goto(s.base + "/");
  await Promise.all([page.waitForURL(s.base + "/sub%20dir/"), page.locator("a", { hasText: "sub dir/" }).click()]);
  assert.equal(await page.locator("h1").innerText(), "Directory listing for /sub dir/");
  assert.deepEqual(await page.locator("table tbody tr td.name a").allInnerTexts(), ["Parent directory", "inner.html"]);
  await Promise.all([page.waitForURL(s.base + "/sub%20dir/inner.html"), page.locator("a", { hasText: "inner.html" }).click()]);
  assert.equal(await page.locator("#inner").innerText(), "Inner page");
  await page.goBack();
  await Promise.all([page.waitForURL(s.base + "/"), page.locator("a", { hasText: "Parent directory" }).click()]);
  assert.equal(await page.title(), "Directory listing for /");
});

test("a directory URL without its slash is redirected, and the listing's relative links work there", async () => {
  await page.goto(s.base + "/assets");
  assert.equal(page.url(), s.base + "/assets/");
  await Promise.all([page.waitForURL(s.base + "/assets/style.css"), page.locator("a", { hasText: "style.css" }).click()]);
});
