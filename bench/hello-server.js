// One server for bench/hello.js, in its own process: `node hello-server.js bare|hello|deep`.
// Prints the port when listening; answers "rss" messages with its resident set size.
"use strict";
const http = require("node:http");
const { Resource, Site } = require("..");

const BODY = "Hello, World!"; // 13 bytes
const kind = process.argv[2];
let handler;
if (kind === "bare") {
  handler = (req, res) => {
    // The same headers trellis sends by default.
    res.writeHead(200, { Server: "trellis/0.1.0", "Content-Type": "text/html; charset=utf-8", "Content-Length": 13 });
    res.end(BODY);
  };
} else {
  class Hello extends Resource {
    isLeaf = true;
    render_GET() {
      return BODY;
    }
  }
  const root = new Resource();
  if (kind === "hello") {
    root.putChild("hello", new Hello());
  } else if (kind === "deep") {
    // /a/b/c/d/e/f/g/h/i/j: nine plain levels and a leaf
    let node = root;
    for (const name of "abcdefghi") {
      const child = new Resource();
      node.putChild(name, child);
      node = child;
    }
    node.putChild("j", new Hello());
  } else {
    throw new Error(`unknown server kind ${kind}`);
  }
  handler = new Site(root).handler;
}
const server = http.createServer({ keepAliveTimeout: 10000 }, handler);
server.listen(0, "127.0.0.1", () => process.send({ port: server.address().port }));
process.on("message", (m) => {
  if (m === "rss") {
    globalThis.gc?.();
    process.send({ rss: process.memoryUsage().rss });
  }
  if (m === "cpu") {
    const u = process.cpuUsage();
    process.send({ cpu: u.user + u.system });
  }
  if (m === "exit") process.exit(0);
});
