/**
 * Forms, uploads, sessions and encoders with a real browser (Debian's Chromium driven by
 * playwright-core): Chromium submits urlencoded and multipart forms with a file, two browser
 * profiles keep two sessions, the session cookie is hidden from scripts, and a Brotli page
 * is decoded by the browser.
 */
import assert from "node:assert/strict";
import { createHash, randomBytes } from "node:crypto";
import { existsSync } from "node:fs";
import { after, before, test } from "node:test";
import { type Browser, chromium } from "playwright-core";
import { escapeHtml } from "../../src/internal/html";
import { BrotliEncoderFactory, EncodingResourceWrapper, GzipEncoderFactory } from "../../src/encoding";
import type { Request } from "../../src/request";
import { Resource } from "../../src/resource";
import "../../src/session";
import { serve, type Running } from "../helpers";

const CHROMIUM = process.env.CHROMIUM_PATH ?? "/usr/bin/chromium";
let s: Running;
let browser: Browser;

/** A form page; the POST answers with what the server parsed, as JSON in a <pre>. */
class FormPage extends Resource {
  override isLeaf = true;
  constructor(readonly enctype: string) {
    super();
  }
  render_GET() {
    return `<!DOCTYPE html><meta charset="utf-8"><title>form</title>
<form method="post" enctype="${this.enctype}"><input name="name"><input name="tag" value="a"><input name="tag" value="b">
${this.enctype === "multipart/form-data" ? '<input type="file" name="upload">' : ""}<button id="send">send</button></form>`;
  }
  async render_POST(request: Request) {
    const files: Record<string, unknown> = {};
    for (const [name, [f]] of Object.entries(request.files)) {
      files[name] = { filename: f.filename, type: f.type, size: f.size, sha256: createHash("sha256").update(await f.buffer()).digest("hex") };
    }
    return `<!DOCTYPE html><meta charset="utf-8"><pre id="out">${escapeHtml(JSON.stringify({ args: request.args, files }))}</pre>`;
  }
}

class Counter extends Resource {
  override isLeaf = true;
  async render_GET(request: Request) {
    const session = await request.getSession<{ n: number }>();
    const n = (session.get("n") ?? 0) + 1;
    await session.set("n", n);
    return `<!DOCTYPE html><meta charset="utf-8"><p id="n">${n}</p>`;
  }
}

const TEXT = "Brotli in the browser. ".repeat(5000);

before(async () => {
  assert.ok(existsSync(CHROMIUM), `${CHROMIUM} not found: install the chromium package (apt-get install chromium) or set CHROMIUM_PATH`);
  const root = new Resource();
  root.putChild("urlencoded", new FormPage("application/x-www-form-urlencoded"));
  root.putChild("multipart", new FormPage("multipart/form-data"));
  root.putChild("count", new Counter());
  class Big extends Resource {
    override isLeaf = true;
    render_GET() {
      return `<!DOCTYPE html><meta charset="utf-8"><p id="text">${TEXT}</p>`;
    }
  }
  root.putChild("big", new EncodingResourceWrapper(new Big(), [new BrotliEncoderFactory(), new GzipEncoderFactory()]));
  s = await serve(root);
  browser = await chromium.launch({
    executablePath: CHROMIUM,
    args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking", "--disable-component-update", "--disable-sync"],
  });
});

after(async () => {
  await browser?.close();
  await s?.close();
});

test("Chromium's urlencoded form arrives in args, UTF-8 and repeated names intact", async () => {
  const page = await browser.newPage();
  try {
    await page.goto(s.base + "/urlencoded?q=1");
    await page.fill("input[name=name]", "Zoë & Δ+1");
    await Promise.all([page.waitForURL(s.base + "/urlencoded?q=1"), page.click("#send")]);
    const out = JSON.parse(await page.locator("#out").innerText());
    assert.deepEqual(out.args, { q: ["1"], name: ["Zoë & Δ+1"], tag: ["a", "b"] });
  } finally {
    await page.close();
  }
});

test("Chromium's multipart form with a file arrives in args and files, byte for byte", async () => {
  const page = await browser.newPage();
  const data = randomBytes(300 * 1024);
  try {
    await page.goto(s.base + "/multipart");
    await page.fill("input[name=name]", "café");
    await page.setInputFiles("input[name=upload]", { name: "photo é.bin", mimeType: "application/octet-stream", buffer: data });
    await Promise.all([page.waitForURL(s.base + "/multipart"), page.click("#send")]);
    const out = JSON.parse(await page.locator("#out").innerText());
    assert.deepEqual(out.args, { name: ["café"], tag: ["a", "b"] });
    assert.deepEqual(out.files.upload, { filename: "photo é.bin", type: "application/octet-stream", size: data.length, sha256: createHash("sha256").update(data).digest("hex") });
  } finally {
    await page.close();
  }
});

test("two browser profiles keep two sessions; the session cookie is HttpOnly, SameSite=Lax", async () => {
  const a = await browser.newContext();
  const b = await browser.newContext();
  try {
    const pa = await a.newPage();
    const pb = await b.newPage();
    const count = async (p: typeof pa) => {
      await p.goto(s.base + "/count");
      return p.locator("#n").innerText();
    };
    assert.equal(await count(pa), "1");
    assert.equal(await count(pa), "2");
    assert.equal(await count(pb), "1");
    assert.equal(await count(pa), "3");
    assert.equal(await count(pb), "2");
    assert.equal(await pa.evaluate(() => (globalThis as unknown as { document: { cookie: string } }).document.cookie), "", "scripts cannot see the session cookie");
    const [cookie] = await a.cookies(s.base);
    assert.equal(cookie.name, "TRELLIS_SESSION");
    assert.equal(cookie.httpOnly, true);
    assert.equal(cookie.sameSite, "Lax");
    assert.equal(cookie.path, "/");
  } finally {
    await a.close();
    await b.close();
  }
});

test("Chromium receives Brotli and renders the decoded page", async () => {
  const page = await browser.newPage();
  try {
    const response = await page.goto(s.base + "/big");
    const headers = await response!.allHeaders();
    assert.equal(headers["content-encoding"], "br");
    assert.equal(headers.vary, "Accept-Encoding");
    assert.equal(await page.locator("#text").innerText(), TEXT.trim());
  } finally {
    await page.close();
  }
});
