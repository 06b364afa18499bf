import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { test } from "node:test";
import { ROOT, serve, request } from "./helpers";
import { Resource } from "../src/resource";
import { VERSION } from "../src/internal/version";

const pkg = JSON.parse(readFileSync(join(ROOT, "package.json"), "utf8"));

test("VERSION matches package.json", () => {
  assert.equal(VERSION, pkg.version);
});

test("every response carries Server: trellis/<version> and a Date", async () => {
  const s = await serve(new Resource());
  try {
    const r = await request(s.base + "/");
    assert.equal(r.headers.server, `trellis/${pkg.version}`);
    assert.ok(r.headers.date && !Number.isNaN(Date.parse(r.headers.date)));
  } finally {
    await s.close();
  }
});
