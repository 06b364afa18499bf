/**
 * A CGI site run as a child process by cgi-descriptors.test.ts, under `prlimit --nofile` so
 * that the test can use up its file descriptors. It serves `/plain` (a leaf that needs no
 * descriptor) and `/cgi/` (the CGI fixtures), with scripts started by the helper process
 * (`node cgi-limited-server.js helper`) or from this process (`… direct`).
 *
 * It tells the test what happens, one line each on stdout: `listening PORT` once it listens,
 * `connections N` whenever its number of open connections changes, and `log MESSAGE` for
 * each error it logs. Idle connections are kept for minutes, so that the test's stay open.
 */
import type { AddressInfo } from "node:net";
import { CGIDirectory } from "../src/cgi";
import { Resource } from "../src/resource";
import { Site } from "../src/server";
import { FIXTURES } from "./cgi-fixtures";

class Plain extends Resource {
  override isLeaf = true;
  render_GET(): string {
    return "plain\n";
  }
}

function say(line: string): void {
  process.stdout.write(line.replace(/\n/g, " ") + "\n");
}

async function main(): Promise<void> {
  const root = new Resource();
  root.putChild("plain", new Plain());
  root.putChild("cgi", new CGIDirectory(FIXTURES, { spawnHelper: process.argv[2] === "helper", timeout: 10_000 }));
  const site = new Site(root, {
    keepAliveTimeout: 300_000,
    errorLog: (message, error) => say(`log ${message}${error instanceof Error ? `: ${error.message}` : ""}`),
  });
  const server = await site.listen({ port: 0, host: "127.0.0.1" });
  let open = 0;
  server.on("connection", (socket) => {
    say(`connections ${++open}`);
    socket.once("close", () => say(`connections ${--open}`));
  });
  say(`listening ${(server.address() as AddressInfo).port}`);
}

void main();
