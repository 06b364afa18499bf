// How the benchmarks place their processes: each server in its own process on CPU 0, the
// load generator on CPU 1 (with taskset, where it exists), so that the two never compete.
"use strict";
const { execFileSync, fork } = require("node:child_process");
const { readdirSync, readFileSync } = require("node:fs");

/** True when `taskset` can pin processes to a CPU, and PIN=0 was not asked for (all processes share all CPUs). */
const hasTaskset = (() => {
  if (process.env.PIN === "0") return false;
  try {
    execFileSync("taskset", ["-c", "0", "true"]);
    return true;
  } catch {
    return false;
  }
})();

/** Moves this process (the load generator) to CPU 1. */
function pinLoadGenerator() {
  if (!hasTaskset) return;
  try {
    execFileSync("taskset", ["-cp", "1", String(process.pid)], { stdio: "ignore" });
  } catch {}
}

/** `[command, args]` that run `cmd args…` on CPU 0. */
const pinned = (cmd, args) => (hasTaskset ? ["taskset", ["-c", "0", cmd, ...args]] : [cmd, args]);

/**
 * Forks a Node server script on CPU 0 and resolves with it and the port it reports in its
 * first message (`{ port }`).
 */
function forkServer(script, args, execArgv = []) {
  const child = hasTaskset
    ? fork(script, args, { execPath: "taskset", execArgv: ["-c", "0", process.execPath, ...execArgv] })
    : fork(script, args, { execArgv });
  return new Promise((resolve, reject) => {
    child.once("message", (m) => resolve({ child, port: m.port }));
    child.once("exit", (code) => reject(new Error(`${script} ${args.join(" ")} exited with ${code}`)));
  });
}

/** Sends `what` to a forked server and resolves with the field of that name in its answer. */
const ask = (child, what) =>
  new Promise((resolve) => {
    child.once("message", (m) => resolve(m[what]));
    child.send(what);
  });

/**
 * This process's open descriptors, those of its CGI helper process, its live descendants and
 * the zombies among them (scripts are the helper's children), and its RSS.
 */
function health() {
  const parents = new Map();
  const states = new Map();
  for (const name of readdirSync("/proc")) {
    if (!/^\d+$/.test(name)) continue;
    try {
      const stat = readFileSync(`/proc/${name}/stat`, "utf8");
      const [state, ppid] = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
      parents.set(Number(name), Number(ppid));
      states.set(Number(name), state);
    } catch {}
  }
  const descends = (pid) => {
    for (let p = parents.get(pid); p !== undefined && p > 1; p = parents.get(p)) if (p === process.pid) return true;
    return false;
  };
  const zombies = [...states].filter(([pid, state]) => state === "Z" && descends(pid)).map(([pid]) => pid);
  const descendants = [...states].filter(([pid, state]) => state !== "Z" && descends(pid)).length;
  const helper = require("../dist/internal/cgi-launcher").helperInfo();
  let helperFds = 0;
  try {
    if (helper) helperFds = readdirSync(`/proc/${helper.pid}/fd`).length;
  } catch {}
  return { fds: readdirSync("/proc/self/fd").length, helperFds, zombies, descendants, rss: process.memoryUsage().rss };
}

module.exports = { hasTaskset, health, pinLoadGenerator, pinned, forkServer, ask };
