#!/usr/bin/env node
/**
 * The `trellis` command. `trellis web` is the `twistd web` of trellis: serve a directory (with
 * `.rjs` and `.asis` processors), a resource class or a resource script, on TCP ports, UNIX
 * sockets or HTTPS, with an access log and graceful shutdown on SIGINT/SIGTERM.
 */
import { readFileSync, statSync } from "node:fs";
import { createRequire } from "node:module";
import type { AddressInfo } from "node:net";
import { isAbsolute, join, resolve } from "node:path";
import { parseArgs } from "node:util";
import { pathToFileURL } from "node:url";
import type { Request } from "./request";
import { getChildForRequest, type IRequest, type IResource, type RenderResult, Resource } from "./resource";
import { type ListenOptions, Site, type SiteOptions } from "./server";
import { CGIDirectory, CGIScript } from "./cgi";
import { ResourceScript } from "./script";
import { ASISProcessor, type DotfilesPolicy, File, type FileOptions, type Processor, type SymlinkPolicy } from "./static";
import { VERSION } from "./internal/version";

/** A mistake on the command line: reported with the option it concerns, exit status 2. */
export class UsageError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "UsageError";
  }
}

// ---- options ----------------------------------------------------------------------------

/**
 * The options of `trellis web` (node:util parseArgs). To add one: an entry here, a line in
 * WEB_HELP, and its effect in `webConfig` (what to serve) or `endpoints` (where to listen).
 */
const WEB_OPTIONS = {
  path: { type: "string" },
  port: { type: "string", short: "p" },
  listen: { type: "string", multiple: true },
  https: { type: "string" },
  certificate: { type: "string", short: "c" },
  privkey: { type: "string", short: "k" },
  logfile: { type: "string", short: "l" },
  index: { type: "string", short: "i", multiple: true },
  "mime-type": { type: "string", short: "m" },
  "ignore-ext": { type: "string", multiple: true },
  "allow-ignore-ext": { type: "boolean" },
  processor: { type: "string", multiple: true },
  dotfiles: { type: "string" },
  "follow-symlinks": { type: "string" },
  precompressed: { type: "boolean" },
  "cache-control": { type: "string" },
  class: { type: "string" },
  "resource-script": { type: "string" },
  "add-header": { type: "string", multiple: true },
  "cgi-bin": { type: "string", multiple: true },
  "display-tracebacks": { type: "boolean" },
  notracebacks: { type: "boolean", short: "n" },
  help: { type: "boolean", short: "h" },
} as const;

const WEB_HELP = `Usage: trellis web [options]

Serve a directory, a resource class or a resource script over HTTP.

What to serve (one of; default: a test page):
      --path DIR              serve DIR (files, listings, .rjs, .asis and .cgi processors)
      --class MOD#EXPORT      a resource class as the root (made with no arguments)
      --resource-script FILE  a .rjs script as the root (reloaded when it changes)

Where to listen (default: tcp:8080):
  -p, --port PORT             a TCP port, or an endpoint like --listen
      --listen ENDPOINT       repeatable: tcp:PORT[:interface=HOST], unix:PATH,
                              ssl:PORT:privateKey=KEY:certKey=CERT[:interface=HOST]
      --https PORT            also serve HTTPS on PORT, with:
  -c, --certificate FILE      the certificate (PEM), default server.pem
  -k, --privkey FILE          the private key (PEM), default server.pem

With --path:
  -i, --index NAME            repeatable: index names, replacing the default
                              (index.html, index.htm, index.rjs, index.asis, index.cgi)
  -m, --mime-type TYPE        type of files with an unknown extension
                              (default application/octet-stream)
      --ignore-ext EXT        repeatable: let URLs leave out EXT (/foo finds foo.rjs)
      --allow-ignore-ext      let URLs leave out any extension
      --processor .EXT=MOD#EXPORT
                              repeatable: files ending in .EXT are made into
                              resources by EXPORT(path, registry) (or new EXPORT)
      --dotfiles POLICY       names starting with "." : ignore (404, default),
                              deny (403) or allow
      --follow-symlinks WHERE inside (default), any, or never
      --precompressed         serve NAME.br / NAME.gz to clients that accept them
      --cache-control VALUE   a Cache-Control header for files

CGI (with --path, or alone):
      --cgi-bin /URL=DIR      repeatable: every executable in DIR is a CGI script
                              under /URL (as http.server's cgi_directories)

Everything:
  -l, --logfile FILE          access log (Combined Log Format); "-" for standard
                              output (the default)
      --add-header "N: V"     repeatable: a header added to every response
      --display-tracebacks    show stack traces on 500 pages (not in production)
  -n, --notracebacks          no effect (tracebacks are off unless asked for)
  -h, --help                  this help

MOD is a file path (./lib/res.js) or a package name; #EXPORT defaults to the default
export. Stop with Ctrl-C (SIGINT) or SIGTERM: responses in flight are allowed to finish.
`;

const MAIN_HELP = `Usage: trellis <command> [options]

Commands:
  web        serve a directory, a resource class or a resource script
             (trellis web --help for its options)

  trellis --version   print the version
`;

/** Extension processors that `--path` turns on. */
const PATH_PROCESSORS: Record<string, Processor> = {
  ".rjs": ResourceScript,
  ".asis": ASISProcessor,
  ".cgi": CGIScript,
};

/** One place to listen. */
export interface Endpoint {
  /** How it was written, for messages. */
  spec: string;
  listen: ListenOptions;
  /** Certificate and key files, for HTTPS. */
  tlsFiles?: { cert: string; key: string };
}

/** Everything `trellis web` was asked to do, before anything is loaded or opened. */
export interface WebConfig {
  root: { kind: "path"; path: string; file: FileOptions; processorSpecs: [string, string][]; allowAnyExt: boolean } | { kind: "class"; spec: string } | { kind: "script"; path: string } | { kind: "test" };
  endpoints: Endpoint[];
  headers: [string, string][];
  /** `--cgi-bin` mounts: a first-level URL segment and a directory. */
  cgiBins: { segment: string; dir: string }[];
  site: SiteOptions;
  /** Where the access log goes: a file, or standard output. */
  logfile: string;
  warnings: string[];
}

// ---- parsing ------------------------------------------------------------------------------

function parsePort(value: string, option: string): number {
  if (!/^\d{1,5}$/.test(value) || Number(value) > 65535) throw new UsageError(`${option}: "${value}" is not a port number (0-65535)`);
  return Number(value);
}

/** Splits an endpoint description at unescaped colons (`\:` keeps a colon, as in IPv6 addresses). */
function splitEndpoint(spec: string): string[] {
  const parts: string[] = [];
  let cur = "";
  for (let i = 0; i < spec.length; i++) {
    const c = spec[i];
    if (c === "\\" && i + 1 < spec.length) cur += spec[++i];
    else if (c === ":") {
      parts.push(cur);
      cur = "";
    } else cur += c;
  }
  parts.push(cur);
  return parts;
}

/** Parses `tcp:PORT[:interface=HOST]`, `unix:PATH`, `ssl:PORT:privateKey=K:certKey=C` or a bare port. */
export function parseEndpoint(spec: string, option: string): Endpoint {
  if (/^\d+$/.test(spec)) return { spec, listen: { port: parsePort(spec, option) } };
  const [kind, ...rest] = splitEndpoint(spec);
  const positional: string[] = [];
  const named: Record<string, string> = {};
  for (const p of rest) {
    const eq = p.indexOf("=");
    if (eq > 0) named[p.slice(0, eq)] = p.slice(eq + 1);
    else positional.push(p);
  }
  const known = (names: string[]) => {
    for (const k of Object.keys(named)) {
      if (!names.includes(k)) throw new UsageError(`${option} ${spec}: unknown parameter "${k}" (known: ${names.join(", ")})`);
    }
  };
  const backlog = named.backlog === undefined ? undefined : parsePort(named.backlog, `${option} ${spec} backlog`);
  switch (kind) {
    case "tcp":
    case "ssl": {
      known(kind === "tcp" ? ["port", "interface", "backlog"] : ["port", "interface", "backlog", "privateKey", "certKey"]);
      const port = named.port ?? positional[0];
      if (port === undefined) throw new UsageError(`${option} ${spec}: no port; write ${kind}:PORT`);
      const listen: ListenOptions = { port: parsePort(port, `${option} ${spec}`), host: named.interface || undefined, backlog };
      if (kind === "tcp") return { spec, listen };
      return { spec, listen, tlsFiles: { key: named.privateKey ?? "server.pem", cert: named.certKey ?? named.privateKey ?? "server.pem" } };
    }
    case "unix": {
      known(["address", "backlog", "mode", "lockfile"]);
      const path = named.address ?? positional[0];
      if (!path) throw new UsageError(`${option} ${spec}: no socket path; write unix:PATH`);
      return { spec, listen: { path: resolve(path), backlog } };
    }
    default:
      throw new UsageError(`${option}: unknown endpoint type "${kind}" in "${spec}" (use tcp:PORT, unix:PATH or ssl:PORT:privateKey=KEY:certKey=CERT)`);
  }
}

const TOKEN = /^[!#$%&'*+.^_`|~0-9A-Za-z-]+$/;

function parseHeader(value: string): [string, string] {
  const colon = value.indexOf(":");
  const name = colon < 0 ? "" : value.slice(0, colon).trim();
  const v = colon < 0 ? "" : value.slice(colon + 1).trim();
  if (!TOKEN.test(name)) throw new UsageError(`--add-header: "${value}" is not "Name: value"`);
  // eslint-disable-next-line no-control-regex
  if (/[\x00-\x08\x0a-\x1f\x7f]/.test(v)) throw new UsageError(`--add-header: the value of ${name} contains control characters`);
  return [name, v];
}

function oneOf<T extends string>(value: string | undefined, allowed: readonly T[], option: string): T | undefined {
  if (value === undefined) return undefined;
  if (!(allowed as readonly string[]).includes(value)) throw new UsageError(`${option}: "${value}" is not one of ${allowed.join(", ")}`);
  return value as T;
}

/** Parses the arguments after `trellis web` into a WebConfig; throws UsageError naming the bad option. */
export function webConfig(argv: string[], cwd = process.cwd()): WebConfig | "help" {
  let values: { [K in keyof typeof WEB_OPTIONS]?: (typeof WEB_OPTIONS)[K] extends { multiple: true } ? string[] : (typeof WEB_OPTIONS)[K]["type"] extends "boolean" ? boolean : string };
  try {
    ({ values } = parseArgs({ args: argv, options: WEB_OPTIONS, strict: true, allowPositionals: false }) as { values: typeof values });
  } catch (err) {
    // parseArgs says e.g. "Unknown option '--prot'" or "Option '--port <value>' argument missing".
    throw new UsageError((err as Error).message.replace(/\. To specify a positional argument.*$/s, ""));
  }
  if (values.help) return "help";
  const warnings: string[] = [];

  const roots = (["path", "class", "resource-script"] as const).filter((k) => values[k] !== undefined);
  if (roots.length > 1) throw new UsageError(`--${roots[0]} and --${roots[1]} both choose what to serve; give only one`);
  const needPath = (["index", "mime-type", "ignore-ext", "allow-ignore-ext", "processor", "dotfiles", "follow-symlinks", "precompressed", "cache-control"] as const).filter(
    (k) => values[k] !== undefined,
  );
  if (needPath.length > 0 && values.path === undefined) throw new UsageError(`--${needPath[0]} only applies with --path DIR`);

  let root: WebConfig["root"] = { kind: "test" };
  if (values.path !== undefined) {
    const path = resolve(cwd, values.path);
    let isDir = false;
    try {
      isDir = statSync(path).isDirectory() || statSync(path).isFile();
    } catch {
      throw new UsageError(`--path: "${values.path}" does not exist`);
    }
    if (!isDir) throw new UsageError(`--path: "${values.path}" is neither a directory nor a file`);
    const processorSpecs: [string, string][] = [];
    for (const p of values.processor ?? []) {
      const m = /^(\.[^=]+)=(.+)$/.exec(p);
      if (!m) throw new UsageError(`--processor: "${p}" is not .EXT=MODULE#EXPORT`);
      processorSpecs.push([m[1], m[2]]);
    }
    const file: FileOptions = {
      processors: { ...PATH_PROCESSORS },
      indexNames: values.index,
      defaultType: values["mime-type"],
      ignoredExts: values["ignore-ext"],
      dotfiles: oneOf<DotfilesPolicy>(values.dotfiles, ["ignore", "deny", "allow"], "--dotfiles"),
      followSymlinks: oneOf<SymlinkPolicy>(values["follow-symlinks"], ["inside", "any", "never"], "--follow-symlinks"),
      precompressed: values.precompressed,
      cacheControl: values["cache-control"],
    };
    if (file.cacheControl !== undefined) parseHeader(`Cache-Control: ${file.cacheControl}`);
    root = { kind: "path", path, file, processorSpecs, allowAnyExt: values["allow-ignore-ext"] === true };
  } else if (values.class !== undefined) {
    root = { kind: "class", spec: values.class };
  } else if (values["resource-script"] !== undefined) {
    const path = resolve(cwd, values["resource-script"]);
    try {
      if (!statSync(path).isFile()) throw new Error();
    } catch {
      throw new UsageError(`--resource-script: "${values["resource-script"]}" is not a file`);
    }
    root = { kind: "script", path };
  }

  const endpoints: Endpoint[] = [];
  if (values.port !== undefined) endpoints.push(parseEndpoint(values.port, "--port"));
  for (const l of values.listen ?? []) endpoints.push(parseEndpoint(l, "--listen"));
  if (values.https !== undefined) {
    const port = parsePort(values.https, "--https");
    endpoints.push({ spec: `ssl:${port}`, listen: { port }, tlsFiles: { cert: values.certificate ?? "server.pem", key: values.privkey ?? "server.pem" } });
  } else if (values.certificate !== undefined || values.privkey !== undefined) {
    throw new UsageError(`--${values.certificate !== undefined ? "certificate" : "privkey"} only applies with --https PORT`);
  }
  if (endpoints.length === 0) endpoints.push({ spec: "tcp:8080", listen: { port: 8080 } });
  for (const e of endpoints) {
    if (!e.tlsFiles) continue;
    for (const [what, file] of [
      ["certificate", e.tlsFiles.cert],
      ["private key", e.tlsFiles.key],
    ]) {
      try {
        statSync(resolve(cwd, file));
      } catch {
        throw new UsageError(`${e.spec}: the ${what} file "${file}" does not exist (give it with --certificate/--privkey or certKey=/privateKey=)`);
      }
    }
  }

  const cgiBins: WebConfig["cgiBins"] = [];
  for (const spec of values["cgi-bin"] ?? []) {
    const m = /^\/([^/=]+)=(.+)$/.exec(spec);
    if (!m) throw new UsageError(`--cgi-bin: "${spec}" is not /URL=DIR with a one-segment URL (e.g. /cgi-bin=./cgi-bin)`);
    const dir = resolve(cwd, m[2]);
    let isDir = false;
    try {
      isDir = statSync(dir).isDirectory();
    } catch {
      // reported just below
    }
    if (!isDir) throw new UsageError(`--cgi-bin: "${m[2]}" is not a directory`);
    if (cgiBins.some((c) => c.segment === m[1])) throw new UsageError(`--cgi-bin: /${m[1]} is given twice`);
    cgiBins.push({ segment: m[1], dir });
  }
  if (cgiBins.length > 0 && (root.kind === "class" || root.kind === "script")) {
    throw new UsageError(`--cgi-bin applies with --path DIR or alone, not with --${root.kind === "class" ? "class" : "resource-script"}`);
  }

  if (values.notracebacks) warnings.push("--notracebacks has no effect: tracebacks are shown only with --display-tracebacks");
  return {
    root,
    endpoints,
    headers: (values["add-header"] ?? []).map(parseHeader),
    cgiBins,
    site: { displayTracebacks: values["display-tracebacks"] === true },
    logfile: values.logfile ?? "-",
    warnings,
  };
}

// ---- building -----------------------------------------------------------------------------

/** Loads `module#Export` (a path relative to `cwd`, or a package name); the default export without `#`. */
export async function loadExport(spec: string, option: string, cwd = process.cwd()): Promise<unknown> {
  const hash = spec.lastIndexOf("#");
  const modSpec = hash < 0 ? spec : spec.slice(0, hash);
  const name = hash < 0 ? "default" : spec.slice(hash + 1);
  if (!modSpec) throw new UsageError(`${option}: "${spec}" names no module; write MODULE#EXPORT`);
  const local = modSpec.startsWith(".") || isAbsolute(modSpec);
  let resolved: string;
  try {
    resolved = createRequire(join(cwd, "noop.js")).resolve(local ? resolve(cwd, modSpec) : modSpec);
  } catch {
    throw new UsageError(`${option}: cannot find the module "${modSpec}"${local ? "" : " (a package name; write ./" + modSpec + " for a file)"}`);
  }
  let ns: Record<string, unknown>;
  try {
    ns = (await import(pathToFileURL(resolved).href)) as Record<string, unknown>;
  } catch (err) {
    throw new Error(`${option}: loading ${resolved} failed: ${err instanceof Error ? err.message : String(err)}`, { cause: err });
  }
  const fromDefault = ns.default as Record<string, unknown> | undefined;
  const value = name === "default" ? (ns.default ?? ns) : (ns[name] ?? fromDefault?.[name]);
  if (value === undefined) throw new UsageError(`${option}: the module "${modSpec}" has no export "${name}"`);
  return value;
}

function isResource(v: unknown): v is IResource {
  return typeof (v as IResource | null)?.render === "function";
}

/** The page served when nothing else was chosen (as `twistd web` does). */
class TestPage extends Resource {
  override isLeaf = true;
  render_GET(request: Request): string {
    request.setHeader("Content-Type", "text/html; charset=utf-8");
    return `<!DOCTYPE html>\n<html><head><meta charset="utf-8"><title>trellis web</title></head><body><h1>Hello! This is a trellis web test page.</h1><p>Serve something with <code>trellis web --path DIR</code>; see <code>trellis web --help</code>.</p></body></html>\n`;
  }
}

/** Builds the root resource a WebConfig describes (loading modules it names). */
export async function buildRoot(config: WebConfig, cwd = process.cwd()): Promise<IResource> {
  const r = config.root;
  let root: IResource;
  switch (r.kind) {
    case "path": {
      const processors = { ...r.file.processors };
      for (const [ext, spec] of r.processorSpecs) {
        const p = await loadExport(spec, "--processor", cwd);
        if (typeof p !== "function") throw new UsageError(`--processor ${ext}: "${spec}" is not a class or function`);
        processors[ext] = p as Processor;
      }
      const file = new File(r.path, { ...r.file, processors });
      if (r.allowAnyExt) file.ignoreExt("*");
      // CGI directories are mounted over the files: a file or directory of the same name is hidden.
      for (const c of config.cgiBins) file.putChild(c.segment, new CGIDirectory(c.dir));
      root = file;
      break;
    }
    case "class": {
      const C = await loadExport(r.spec, "--class", cwd);
      if (typeof C !== "function") throw new UsageError(`--class: "${r.spec}" is not a class`);
      const made: unknown = new (C as new () => unknown)();
      if (!isResource(made)) throw new UsageError(`--class: "${r.spec}" does not make a resource (it needs a render() method)`);
      root = made;
      break;
    }
    case "script":
      root = new ResourceScript(r.path);
      break;
    default:
      if (config.cgiBins.length > 0) {
        // Only CGI directories: the test page stays at "/".
        const top = new Resource();
        top.putChild("", new TestPage());
        for (const c of config.cgiBins) top.putChild(c.segment, new CGIDirectory(c.dir));
        root = top;
      } else root = new TestPage();
  }
  return root;
}

/** The URL (or socket) a listening server answers on, for the startup message. */
function describeAddress(endpoint: Endpoint, address: AddressInfo | string | null): string {
  if (typeof address === "string" || endpoint.listen.path !== undefined) return `unix:${endpoint.listen.path ?? address}`;
  const scheme = endpoint.tlsFiles ? "https" : "http";
  const a = address as AddressInfo;
  // Bound to every interface: a URL that can be clicked, and say so.
  if (endpoint.listen.host === undefined) return `${scheme}://localhost:${a.port}/ (all interfaces)`;
  const host = endpoint.listen.host;
  const shown = host.includes(":") && !host.startsWith("[") ? `[${host}]` : host;
  return `${scheme}://${shown}:${a.port}/`;
}

// ---- running -----------------------------------------------------------------------------

/** Runs `trellis web` with `argv`; resolves with the site once it listens everywhere. */
export async function runWeb(argv: string[]): Promise<Site | undefined> {
  const config = webConfig(argv);
  if (config === "help") {
    process.stdout.write(WEB_HELP);
    return undefined;
  }
  for (const w of config.warnings) process.stderr.write(`trellis web: warning: ${w}\n`);
  const root = await buildRoot(config);
  const site = new Site(root, { ...config.site, headers: config.headers, ...(config.logfile === "-" ? { log: process.stdout } : { logPath: resolve(config.logfile) }) });
  try {
    for (const e of config.endpoints) {
      const tls = e.tlsFiles ? { cert: readFileSync(resolve(e.tlsFiles.cert)), key: readFileSync(resolve(e.tlsFiles.key)) } : undefined;
      const server = await site.listen({ ...e.listen, tls });
      const what = config.root.kind === "path" ? ` serving ${config.root.path}` : "";
      process.stdout.write(`trellis web: listening on ${describeAddress(e, server.address())}${what}\n`);
    }
  } catch (err) {
    await site.close();
    throw err;
  }
  let stopping = false;
  const stop = (signal: NodeJS.Signals) => {
    if (stopping) {
      process.stderr.write(`trellis web: ${signal} again, exiting now\n`);
      process.exit(1);
    }
    stopping = true;
    process.stderr.write(`trellis web: ${signal}, closing (in-flight responses may finish)\n`);
    site.close().then(
      () => process.exit(0),
      (err: unknown) => {
        process.stderr.write(`trellis web: error while closing: ${String(err)}\n`);
        process.exit(1);
      },
    );
  };
  process.on("SIGINT", stop);
  process.on("SIGTERM", stop);
  return site;
}

/** The `trellis` command line. Exit status: 0 fine, 1 a failure while running, 2 a usage error. */
export async function main(argv = process.argv.slice(2)): Promise<void> {
  const [command, ...rest] = argv;
  try {
    if (command === "web") {
      await runWeb(rest);
      return;
    }
    if (command === "--version" || command === "-V") {
      process.stdout.write(`trellis ${VERSION}\n`);
      return;
    }
    if (command === "--help" || command === "-h" || command === "help") {
      process.stdout.write(MAIN_HELP);
      return;
    }
    throw new UsageError(command === undefined ? "no command given" : `unknown command "${command}"`);
  } catch (err) {
    if (err instanceof UsageError) {
      process.stderr.write(`trellis${command === "web" ? " web" : ""}: ${err.message}\nSee "trellis${command === "web" ? " web" : ""} --help".\n`);
      process.exitCode = 2;
      return;
    }
    process.stderr.write(`trellis: ${err instanceof Error ? err.message : String(err)}\n`);
    process.exitCode = 1;
  }
}

if (require.main === module) void main();
