/**
 * A real-world CGI application: Debian's gitweb (Perl, CGI.pm) serving a repository made
 * here. Its project list and a commit page render, and Chromium loads them with their
 * stylesheet, script and images and without a single error.
 */
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { existsSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, test } from "node:test";
import { chromium, type Browser } from "playwright-core";
import { CGIScript } from "../../src/cgi";
import { Resource } from "../../src/resource";
import { File } from "../../src/static";
import { request, serve, type Running } from "../helpers";

const GITWEB = "/usr/share/gitweb";
const CHROMIUM = process.env.CHROMIUM_PATH ?? "/usr/bin/chromium";
const dir = mkdtempSync(join(tmpdir(), "trellis-gitweb-"));
let s: Running;
let commit: string;
let browser: Browser | undefined;

function git(cwd: string, ...args: string[]): string {
  return execFileSync("git", args, {
    cwd,
    encoding: "utf8",
    env: { PATH: process.env.PATH, HOME: dir, GIT_CONFIG_NOSYSTEM: "1", GIT_AUTHOR_DATE: "2026-01-02T03:04:05Z", GIT_COMMITTER_DATE: "2026-01-02T03:04:05Z" },
  }).trim();
}

before(async () => {
  assert.ok(existsSync(join(GITWEB, "gitweb.cgi")), `${GITWEB}/gitweb.cgi not found: install the gitweb and libcgi-pm-perl packages (apt-get install gitweb libcgi-pm-perl)`);
  try {
    execFileSync("perl", ["-MCGI", "-e", "1"], { stdio: "ignore" });
  } catch {
    assert.fail("Perl's CGI module is missing: install the libcgi-pm-perl package (apt-get install libcgi-pm-perl)");
  }
  const work = join(dir, "work");
  mkdirSync(work);
  git(work, "init", "-q", "-b", "main");
  git(work, "config", "user.name", "Trellis Tester");
  git(work, "config", "user.email", "tester@example.com");
  writeFileSync(join(work, "README"), "A repository served by gitweb through trellis.\n");
  git(work, "add", "README");
  git(work, "commit", "-q", "-m", "First commit from trellis", "-m", "Served over CGI/1.1.");
  commit = git(work, "rev-parse", "HEAD");
  const projects = join(dir, "projects");
  mkdirSync(projects);
  git(dir, "clone", "-q", "--bare", work, join(projects, "demo.git"));
  writeFileSync(join(projects, "demo.git", "description"), "trellis demo repository\n");
  const config = join(dir, "gitweb.conf");
  writeFileSync(
    config,
    [
      `our $projectroot = "${projects}";`,
      `our $GIT = "/usr/bin/git";`,
      `our $site_name = "trellis gitweb test";`,
      `our @stylesheets = ("static/gitweb.css");`,
      `our $javascript = "static/gitweb.js";`,
      `our $logo = "static/git-logo.png";`,
      `our $favicon = "static/git-favicon.png";`,
      "1;",
      "",
    ].join("\n"),
  );
  const gitweb = new Resource();
  gitweb.putChild("gitweb.cgi", new CGIScript(join(GITWEB, "gitweb.cgi"), { env: { GITWEB_CONFIG: config, HOME: dir } }));
  gitweb.putChild("static", new File(join(GITWEB, "static")));
  const root = new Resource();
  root.putChild("gitweb", gitweb);
  s = await serve(root);
});

after(async () => {
  await browser?.close();
  await s?.close();
  rmSync(dir, { recursive: true, force: true });
});

test("gitweb's project list renders", async () => {
  const r = await request(`${s.base}/gitweb/gitweb.cgi`);
  assert.equal(r.status, 200, r.text.slice(0, 500));
  assert.match(String(r.headers["content-type"]), /^(text\/html|application\/xhtml\+xml)/);
  assert.match(r.text, /demo\.git/);
  assert.match(r.text, /trellis demo repository/);
  assert.match(r.text, /trellis gitweb test/);
  assert.deepEqual(s.errors, []);
});

test("a commit page renders", async () => {
  const r = await request(`${s.base}/gitweb/gitweb.cgi?p=demo.git;a=commit;h=${commit}`);
  assert.equal(r.status, 200, r.text.slice(0, 500));
  assert.match(r.text, /First commit from trellis/);
  // gitweb writes the spaces of commit messages as &nbsp;.
  assert.match(r.text, /Served(&nbsp;| )over(&nbsp;| )CGI\/1\.1\./);
  assert.ok(r.text.includes(commit));
  assert.match(r.text, /Trellis Tester/);
  const missing = await request(`${s.base}/gitweb/gitweb.cgi?p=nope.git;a=summary`);
  assert.equal(missing.status, 404);
});

test("Chromium loads both pages with their assets and no errors", async () => {
  assert.ok(existsSync(CHROMIUM), `${CHROMIUM} not found: install the chromium package (apt-get install chromium) or set CHROMIUM_PATH`);
  browser = await chromium.launch({
    executablePath: CHROMIUM,
    args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking", "--disable-component-update", "--disable-sync"],
  });
  const page = await browser.newPage();
  const problems: string[] = [];
  page.on("pageerror", (err) => problems.push(`page error: ${err.message}`));
  page.on("console", (msg) => {
    if (msg.type() === "error") problems.push(`console error: ${msg.text()}`);
  });
  page.on("requestfailed", (req) => problems.push(`request failed: ${req.url()} ${req.failure()?.errorText}`));
  page.on("response", (res) => {
    if (res.status() >= 400) problems.push(`HTTP ${res.status()} for ${res.url()}`);
  });
  const loaded: string[] = [];
  page.on("requestfinished", (req) => loaded.push(new URL(req.url()).pathname));

  await page.goto(`${s.base}/gitweb/gitweb.cgi`, { waitUntil: "load" });
  assert.match(await page.title(), /trellis gitweb test/);
  assert.equal(await page.locator("a.list", { hasText: "demo.git" }).count(), 1);
  // The stylesheet applied: gitweb.css gives the page header a background.
  const bg = await page.locator("div.page_header").evaluate((el) => (globalThis as unknown as { getComputedStyle(e: unknown): { backgroundColor: string } }).getComputedStyle(el).backgroundColor);
  assert.notEqual(bg, "rgba(0, 0, 0, 0)");

  await Promise.all([page.waitForURL(/a=summary/), page.locator("a.list", { hasText: "demo.git" }).click()]);
  await page.goto(`${s.base}/gitweb/gitweb.cgi?p=demo.git;a=commit;h=${commit}`, { waitUntil: "load" });
  assert.match(await page.locator("div.page_body").innerText(), /Served[\s\u00a0]over[\s\u00a0]CGI\/1\.1\./);
  for (const asset of ["/gitweb/static/gitweb.css", "/gitweb/static/gitweb.js", "/gitweb/static/git-logo.png"]) {
    assert.ok(loaded.includes(asset), `${asset} was not loaded (loaded: ${loaded.join(", ")})`);
  }
  assert.deepEqual(problems, []);
});
