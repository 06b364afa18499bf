// One server for bench/input.js, in its own process:
//   node input-server.js trellis-form|fastify-form|trellis-gzip|fastify-gzip|trellis-upload
// Sends {port} when listening; answers "rss" with its resident set size, "maxrss" with its
// peak resident set size so far (bytes) and "cpu" with process.cpuUsage(); exits on "exit".
"use strict";
const http = require("node:http");
const { Resource, Site } = require("..");
const { EncodingResourceWrapper, GzipEncoderFactory } = require("../dist/encoding.js");

// 100 KiB of HTML-ish text that compresses about as well as a real page (~5:1).
const BIG = (() => {
  const words = "the quick brown fox jumps over a lazy dog while trellis serves a tree of resources".split(" ");
  let seed = 7;
  const rand = () => ((seed = (seed * 1103515245 + 12345) & 0x7fffffff) / 0x7fffffff);
  let s = "";
  while (s.length < 100 * 1024) {
    s += `<tr><td>${Math.floor(rand() * 1e6)}</td><td>`;
    for (let i = 0; i < 8; i++) s += words[Math.floor(rand() * words.length)] + " ";
    s += "</td></tr>\n";
  }
  return s.slice(0, 100 * 1024);
})();

const kind = process.argv[2];

function listen(server) {
  server.listen(0, "127.0.0.1", () => process.send({ port: server.address().port }));
}

async function main() {
  if (kind.startsWith("fastify")) {
    const fastify = require("fastify")({ logger: false, bodyLimit: 1024 * 1024 });
    if (kind === "fastify-form") {
      await fastify.register(require("@fastify/formbody"));
      fastify.post("/form", async (req, reply) => {
        reply.type("text/plain; charset=utf-8");
        return `ok ${Object.keys(req.body).length} ${req.body.name}`;
      });
    } else {
      await fastify.register(require("@fastify/compress"), { encodings: ["gzip"] });
      fastify.get("/big", async (req, reply) => {
        reply.type("text/html; charset=utf-8");
        return BIG;
      });
    }
    await fastify.ready();
    fastify.server.keepAliveTimeout = 10000;
    listen(fastify.server);
    return;
  }
  const root = new Resource();
  if (kind === "trellis-form") {
    class Form extends Resource {
      isLeaf = true;
      render_POST(request) {
        request.setHeader("Content-Type", "text/plain; charset=utf-8");
        return `ok ${Object.keys(request.args).length} ${request.args.name[0]}`;
      }
    }
    root.putChild("form", new Form());
  } else if (kind === "trellis-gzip") {
    class Big extends Resource {
      isLeaf = true;
      render_GET() {
        return BIG;
      }
    }
    root.putChild("big", new EncodingResourceWrapper(new Big(), [new GzipEncoderFactory()]));
  } else if (kind === "trellis-upload") {
    class Upload extends Resource {
      isLeaf = true;
      bodyLimits = { uploadSize: 2 ** 31, fileSize: 2 ** 31 };
      render_POST(request) {
        const f = request.files.file[0];
        return `${f.size} ${f.path ? "disk" : "memory"}`;
      }
    }
    root.putChild("upload", new Upload());
  } else {
    throw new Error(`unknown server kind ${kind}`);
  }
  // The same connection policy as the Fastify server: keep-alive for 10 s and no cap on the
  // requests per connection (Fastify's default). With the Site's default cap of 1000, all 64
  // connections reach it together every few seconds and reconnect in a burst: that measures
  // autocannon's reconnects, not the request path.
  const site = new Site(root, { serverHeader: false, keepAliveTimeout: 10000, maxRequestsPerSocket: 0 });
  const server = http.createServer({ keepAliveTimeout: 10000 }, site.handler);
  site.attach(server);
  listen(server);
}

process.on("message", (m) => {
  if (m === "rss") process.send({ rss: process.memoryUsage.rss() });
  if (m === "maxrss") process.send({ maxrss: process.resourceUsage().maxRSS * 1024 });
  if (m === "cpu") process.send({ cpu: process.cpuUsage() });
  if (m === "exit") process.exit(0);
});
main().catch((err) => {
  console.error(err);
  process.exit(1);
});
