/**
 * Shared by the CGI tests: where the fixture scripts are, waiting for a script's process to
 * end, and checks that nothing was left behind (processes, zombies, file descriptors).
 */
import { readdirSync, readFileSync, readlinkSync } from "node:fs";
import * as http from "node:http";
import { join } from "node:path";
import type { CGIExit } from "../src/cgi";
import { helperInfo } from "../src/internal/cgi-launcher";
import { ROOT } from "./helpers";

/** The fixture scripts. */
export const FIXTURES = join(ROOT, "test", "fixtures", "cgi");

/** Collects script exits; `next()` and `of(pid)` wait for them (no polling). */
export class Exits {
  readonly seen: CGIExit[] = [];
  #waiters: { match: (e: CGIExit) => boolean; resolve: (e: CGIExit) => void }[] = [];

  /** Pass this as `onExit` in the CGI options. */
  readonly onExit = (exit: CGIExit): void => {
    this.seen.push(exit);
    this.#waiters = this.#waiters.filter((w) => {
      if (!w.match(exit)) return true;
      w.resolve(exit);
      return false;
    });
  };

  /** Waits for the exit of `pid` (resolves at once if it was already seen). */
  of(pid: number): Promise<CGIExit> {
    const done = this.seen.find((e) => e.pid === pid);
    if (done) return Promise.resolve(done);
    return new Promise((resolve) => this.#waiters.push({ match: (e) => e.pid === pid, resolve }));
  }

  /** Waits until `count` exits have been seen in all. */
  count(count: number): Promise<void> {
    if (this.seen.length >= count) return Promise.resolve();
    return new Promise((resolve) => this.#waiters.push({ match: () => this.seen.length >= count, resolve: () => resolve() }));
  }
}

/** The state letter of a process (`R`, `S`, `Z`, …), or undefined when there is no such process. */
export function processState(pid: number): { state: string; ppid: number } | undefined {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
    // The command name is in parentheses and may contain spaces: fields start after the last ")".
    const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
    return { state: fields[0], ppid: Number(fields[1]) };
  } catch {
    return undefined;
  }
}

/**
 * True when `pid` no longer runs: `kill(pid, 0)` fails with ESRCH, or it is a zombie that is
 * not ours to reap (an orphan waiting for init, which may be slow to reap in containers).
 */
export function isGone(pid: number): boolean {
  try {
    process.kill(pid, 0);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === "ESRCH") return true;
    throw err;
  }
  const st = processState(pid);
  return st === undefined || (st.state === "Z" && st.ppid !== process.pid);
}

/**
 * Waits, up to `ms`, until `check()` is true, for a state that no event announces (a process
 * gone, a descriptor closed a moment after the exit it follows). Resolves with the final answer.
 */
export async function waitUntil(check: () => boolean, ms = 2000): Promise<boolean> {
  const deadline = Date.now() + ms;
  while (!check()) {
    if (Date.now() > deadline) return false;
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
  return true;
}

/**
 * Waits until `pid` is gone, up to `ms`. For a process that is not our child there is no
 * event to wait on: its pipes close a moment before the kernel marks it a zombie, so a
 * grandchild seen right after its pipes closed can still look alive. Resolves with the
 * final answer of isGone.
 */
export function waitGone(pid: number, ms = 2000): Promise<boolean> {
  return waitUntil(() => isGone(pid), ms);
}

/** Children of this process, or of its CGI helper process, that have exited but were not reaped. */
export function zombies(): number[] {
  const parents = new Set([process.pid]);
  const helper = helperInfo();
  if (helper) parents.add(helper.pid);
  const found: number[] = [];
  for (const name of readdirSync("/proc")) {
    if (!/^\d+$/.test(name)) continue;
    const st = processState(Number(name));
    if (st && parents.has(st.ppid) && st.state === "Z") found.push(Number(name));
  }
  return found;
}

/**
 * Open file descriptors of this process other than sockets: what a script run holds (pipes,
 * spooled bodies). Sockets are left out because a test's own client sockets close
 * asynchronously after their response ended; the server's are covered by `site.close()`,
 * which resolves only once every connection is closed.
 */
export function fdCount(): number {
  return fdList().filter((target) => !target.startsWith("socket:")).length;
}

/** This process's descriptors open on files in `dir` (spooled bodies: unlinked, but still open). */
export function fdsIn(dir: string): string[] {
  return fdList().filter((target) => target.startsWith(dir + "/"));
}

/** What each open file descriptor points to, for messages. */
export function fdList(): string[] {
  const out: string[] = [];
  for (const fd of readdirSync("/proc/self/fd")) {
    try {
      out.push(readlinkSync(`/proc/self/fd/${fd}`));
    } catch {
      // The descriptor readdir itself used, closed by now.
    }
  }
  return out;
}

/** The query string for `respond.py`: header lines, a body, stderr lines, an exit code. */
export function respondQuery(opts: { h?: string[]; body?: string; raw?: string; err?: string[]; exit?: number }): string {
  const q = new URLSearchParams();
  for (const h of opts.h ?? []) q.append("h", h);
  if (opts.body !== undefined) q.append("body", opts.body);
  if (opts.raw !== undefined) q.append("raw", opts.raw);
  for (const e of opts.err ?? []) q.append("err", e);
  if (opts.exit !== undefined) q.append("exit", String(opts.exit));
  return q.toString();
}

/** Opens a GET and resolves once the first body line arrived, with the line and the client request. */
export function firstLine(url: string): Promise<{ line: string; req: http.ClientRequest }> {
  return new Promise((resolve, reject) => {
    const req = http.get(url, { agent: false }, (res) => {
      let text = "";
      const onData = (c: Buffer) => {
        text += c.toString("latin1");
        const nl = text.indexOf("\n");
        if (nl >= 0) {
          res.off("data", onData);
          res.pause();
          resolve({ line: text.slice(0, nl), req });
        }
      };
      res.on("data", onData);
      res.on("error", () => {});
    });
    req.on("error", (err) => (req.destroyed ? undefined : reject(err)));
  });
}
