/**
 * Starts CGI processes.
 *
 * fork() is most of what a CGI request costs, and it costs more the larger the process that
 * forks: its page tables are copied, and every page it writes afterwards takes a
 * copy-on-write fault. A Node server with a large heap would pay that on every request. So,
 * like Apache's mod_cgid, scripts are started by a small long-lived helper process (a few
 * lines of Perl, which Debian and nearly every Unix carry). The helper connects each
 * script's stdin, stdout and stderr straight back to the server over a private Unix socket,
 * so the script's bytes never pass through it; it only forks, execs, reaps, and reports.
 * Where Perl cannot be started, scripts are spawned from the server process instead.
 */
import { type ChildProcess, spawn } from "node:child_process";
import { randomBytes } from "node:crypto";
import { EventEmitter } from "node:events";
import { mkdtempSync, rmdirSync, rmSync, unlinkSync } from "node:fs";
import type { FileHandle } from "node:fs/promises";
import { createServer, type Server, type Socket } from "node:net";
import { constants as osConstants, tmpdir } from "node:os";
import * as path from "node:path";
import type { Readable, Writable } from "node:stream";

/** What to run, and how. */
export interface LaunchSpec {
  /** The program (absolute, or looked up in `env.PATH`). */
  file: string;
  args: string[];
  cwd: string;
  env: Record<string, string>;
  uid?: number;
  gid?: number;
  /** The script's stdin: nothing (/dev/null), a stream the caller writes, or a file read from its start. */
  stdin: "null" | "pipe" | { file: FileHandle };
  /** How long the helper may take to start it, in ms. Default 10 s. */
  startTimeout?: number;
}

/** A started script: the parts of a ChildProcess that CGI uses. Emits `exit` (code, signal) and then `close`. */
export interface LaunchedProcess extends EventEmitter {
  readonly pid: number;
  /** Set when the spec asked for `"pipe"`. */
  readonly stdin: Writable | null;
  readonly stdout: Readable;
  readonly stderr: Readable;
}

/**
 * Starts a script from a helper process when `useHelper` is true and the helper can run,
 * otherwise from this process. Rejects with the errno error of a failed start (ENOENT,
 * EACCES, EPERM…, and EMFILE, ENFILE, EAGAIN or ENOMEM when the system is out of descriptors
 * or processes: see `outOfResources`), as `child_process.spawn` reports it. A file given as
 * stdin is closed here, whatever happens.
 */
export async function launch(spec: LaunchSpec, useHelper: boolean): Promise<LaunchedProcess> {
  if (useHelper && process.platform !== "win32") {
    const stdin = spec.stdin;
    let child: HelperChild | undefined;
    try {
      const h = await helper();
      if (h !== undefined) child = await h.run(spec);
    } catch (err) {
      if (typeof stdin === "object") closeQuietly(stdin.file);
      throw err;
    }
    if (child !== undefined) {
      if (typeof stdin === "object") feedFile(stdin.file, child.stdin!);
      return child;
    }
  }
  return launchHere(spec);
}

/** Error codes that say the system is out of something (descriptors, processes, memory) for now: worth a 503 and a retry, not a 500. */
const EXHAUSTED = new Set(["EMFILE", "ENFILE", "EAGAIN", "ENOMEM"]);

/** True for an error that means "out of descriptors, processes or memory, for now". */
export function outOfResources(err: unknown): boolean {
  const code = (err as NodeJS.ErrnoException | undefined)?.code;
  return typeof code === "string" && EXHAUSTED.has(code);
}

function closeQuietly(file: FileHandle): void {
  file.close().catch(() => {});
}

/** Why scripts are started from the server process although the helper was asked for, once; then undefined. */
export function takeHelperWarning(): string | undefined {
  const w = helperWarning;
  helperWarning = undefined;
  return w;
}

/** The running helper's pid and socket path, or undefined (for tests and diagnostics). */
export function helperInfo(): { pid: number; socketPath: string } | undefined {
  return current?.info();
}

// ---- spawned from this process ---------------------------------------------------------------

function launchHere(spec: LaunchSpec): Promise<LaunchedProcess> {
  const stdin = spec.stdin;
  let child: ChildProcess;
  try {
    child = spawn(spec.file, spec.args, {
      cwd: spec.cwd,
      env: spec.env,
      // Its own process group, so a kill reaches whatever the script started too.
      detached: true,
      stdio: [typeof stdin === "object" ? stdin.file.fd : stdin === "pipe" ? "pipe" : "ignore", "pipe", "pipe"],
      uid: spec.uid,
      gid: spec.gid,
    });
  } catch (err) {
    if (typeof stdin === "object") closeQuietly(stdin.file);
    return Promise.reject(err);
  }
  // The child has its own copy of the file; ours can go.
  if (typeof stdin === "object") closeQuietly(stdin.file);
  // Out of descriptors or processes, Node reports the failed spawn by an 'error' event, later.
  if (child.pid === undefined) return new Promise((_, reject) => child.once("error", reject));
  return Promise.resolve(child as LaunchedProcess);
}

/**
 * Copies a spooled body into the script's stdin; a script that stops reading just ends it.
 * The file is closed here on every path: read to its end, the script gone (even before this
 * was called: a script that does not read its input can end that soon), or a read error.
 */
function feedFile(file: FileHandle, stdin: Writable): void {
  if (stdin.destroyed || stdin.writableEnded) return closeQuietly(file);
  const source = file.createReadStream({ start: 0, autoClose: true });
  const stop = () => {
    source.unpipe(stdin);
    source.destroy();
  };
  stdin.on("error", stop);
  stdin.once("close", stop);
  source.on("error", () => stdin.destroy());
  // The stream closes the file itself when it ends or is destroyed; this makes sure of it.
  source.once("close", () => closeQuietly(file));
  source.pipe(stdin);
}

// ---- the helper ------------------------------------------------------------------------------

/*
 * Protocol. Server → helper, on its stdin: records "<byte length>\n<fields joined by NUL>",
 * "run", id, file, cwd, uid, gid, stdin ("pipe" or "null"), argument count, the arguments,
 * then the environment as "NAME=value". For each run the helper opens connections to the
 * server's socket, each starting with the id and one letter (O stdout, E stderr, I stdin),
 * waits until the server has answered one byte on each (it holds them all then), forks, and
 * the child makes them its stdio and execs. Helper → server, lines: "S id pid" started,
 * "F id ERRNAME errno" not started, "X id code signal" ended ("-" for none). The id is 128
 * random bits: a connection without a live id is dropped. A connection closed before that
 * answer fails the run with EPIPE or ECONNRESET: a server out of descriptors closes the
 * connections it cannot take at once (libuv does, silently), and the client then gets 503.
 */
const HELPER = String.raw`
use strict;
use Socket qw(PF_UNIX SOCK_STREAM pack_sockaddr_un);
use POSIX ();
use Errno ();
use Fcntl qw(F_GETFL F_SETFL O_NONBLOCK);

my $path = $ARGV[0];
$0 = 'trellis-cgi-helper';
$| = 1;
binmode STDIN;
binmode STDOUT;
open(my $null, '<', '/dev/null') or die "trellis cgi helper: /dev/null: $!\n";
pipe(my $wake_r, my $wake_w) or die "trellis cgi helper: pipe: $!\n";
for my $fh ($wake_r, $wake_w) { fcntl($fh, F_SETFL, fcntl($fh, F_GETFL, 0) | O_NONBLOCK) }
# Caught, not ignored: exec() resets caught signals, so scripts start with none ignored.
# (The helper has a session of its own, so no terminal signal reaches it; a SIGPIPE means
# the server is gone, and so should the helper be.)
$SIG{CHLD} = sub { syswrite($wake_w, 'x') };

my %id_of;

sub errname {
  my $n = shift;
  local $! = $n;
  for my $k (keys %!) { return $k if $!{$k} }
  return 'EIO';
}

sub failed {
  my ($id, $e) = @_;
  $e ||= 5;
  print 'F ' . $id . ' ' . errname($e) . ' ' . $e . "\n";
}

sub reap {
  while ((my $pid = waitpid(-1, POSIX::WNOHANG())) > 0) {
    my $id = delete $id_of{$pid};
    next unless defined $id;
    my $st = $?;
    if ($st & 127) { print 'X ' . $id . ' - ' . ($st & 127) . "\n" }
    else { print 'X ' . $id . ' ' . ($st >> 8) . " -\n" }
  }
}

sub connect_back {
  my ($id, $kind) = @_;
  socket(my $s, PF_UNIX, SOCK_STREAM, 0) or return;
  connect($s, pack_sockaddr_un($path)) or return;
  # A server out of descriptors closes the connection at once: EPIPE then, not a SIGPIPE
  # that would end the helper.
  local $SIG{PIPE} = 'IGNORE';
  my $n = syswrite($s, $id . $kind);
  return unless defined $n && $n == length($id) + 1;
  return $s;
}

# Waits until the server has acknowledged each connection (one byte on each), so that no
# script starts with stdio the server does not hold. A connection closed instead (a server
# out of descriptors closes new ones at once) fails with ECONNRESET.
sub acked {
  my %left = map { (fileno($_) => $_) } @_;
  while (%left) {
    my $rin = '';
    vec($rin, $_, 1) = 1 for keys %left;
    my $n = select(my $rout = $rin, undef, undef, 10);
    if ($n < 0) {
      next if $!{EINTR};
      return 0;
    }
    if ($n == 0) {
      $! = Errno::ETIMEDOUT();
      return 0;
    }
    for my $fd (keys %left) {
      next unless vec($rout, $fd, 1);
      my $r = sysread($left{$fd}, my $ack, 1);
      if (!defined $r) {
        next if $!{EINTR} || $!{EAGAIN};
        return 0;
      }
      if ($r == 0) {
        $! = Errno::ECONNRESET();
        return 0;
      }
      delete $left{$fd};
    }
  }
  return 1;
}

sub run {
  my ($id, $file, $cwd, $uid, $gid, $stdin, $nargs, @rest) = @_;
  my @args = splice(@rest, 0, $nargs);
  my $out = connect_back($id, 'O') or return failed($id, $! + 0);
  my $err = connect_back($id, 'E') or return failed($id, $! + 0);
  my $in = $null;
  if ($stdin eq 'pipe') { $in = connect_back($id, 'I') or return failed($id, $! + 0) }
  acked($stdin eq 'pipe' ? ($out, $err, $in) : ($out, $err)) or return failed($id, $! + 0);
  pipe(my $fail_r, my $fail_w) or return failed($id, $! + 0);
  # The environment is set here, not in the child: every write the child makes to Perl's
  # memory before exec() is a page copied.
  %ENV = ();
  for my $kv (@rest) {
    my $i = index($kv, '=');
    $ENV{substr($kv, 0, $i)} = substr($kv, $i + 1) if $i > 0;
  }
  my $pid = fork();
  return failed($id, $! + 0) unless defined $pid;
  if ($pid == 0) {
    my $fail = sub { my $e = $! + 0; syswrite($fail_w, pack('N', $e || 5)); POSIX::_exit(127) };
    POSIX::sigprocmask(POSIX::SIG_SETMASK(), POSIX::SigSet->new());
    POSIX::setsid();
    defined POSIX::dup2(fileno($in), 0) or $fail->();
    defined POSIX::dup2(fileno($out), 1) or $fail->();
    defined POSIX::dup2(fileno($err), 2) or $fail->();
    chdir($cwd) or $fail->();
    if ($uid ne '' || $gid ne '') {
      my $g = $gid ne '' ? $gid : (split ' ', $))[0];
      $) = "$g $g";
      if ($gid ne '') { POSIX::setgid($gid) or $fail->() }
      if ($uid ne '') { POSIX::setuid($uid) or $fail->() }
    }
    exec { $file } $file, @args;
    $fail->();
  }
  close($fail_w);
  close($out);
  close($err);
  close($in) if $stdin eq 'pipe';
  my ($n, $buf);
  do { $n = sysread($fail_r, $buf, 4) } while (!defined $n && $!{EINTR});
  close($fail_r);
  if (defined $n && $n == 4) {
    waitpid($pid, 0);
    return failed($id, unpack('N', $buf));
  }
  $id_of{$pid} = $id;
  print 'S ' . $id . ' ' . $pid . "\n";
}

print "ready\n";
my $buf = '';
while (1) {
  my $rin = '';
  vec($rin, fileno(STDIN), 1) = 1;
  vec($rin, fileno($wake_r), 1) = 1;
  my $n = select(my $rout = $rin, undef, undef, undef);
  if ($n < 0) {
    next if $!{EINTR};
    die "trellis cgi helper: select: $!\n";
  }
  if (vec($rout, fileno($wake_r), 1)) {
    while (1) { my $r = sysread($wake_r, my $x, 512); last unless $r }
  }
  reap();
  next unless vec($rout, fileno(STDIN), 1);
  my $r = sysread(STDIN, $buf, 65536, length $buf);
  if (!defined $r) {
    next if $!{EINTR} || $!{EAGAIN};
    exit 1;
  }
  exit 0 if $r == 0;
  while ($buf =~ /\A(\d+)\n/) {
    my $len = $1;
    my $start = length($len) + 1;
    last if length($buf) < $start + $len;
    my @f = split /\0/, substr($buf, $start, $len), -1;
    substr($buf, 0, $start + $len, '');
    my $op = shift @f;
    run(@f) if $op eq 'run';
  }
}
`;

const ID_BYTES = 16;
const PREFIX = ID_BYTES * 2 + 1; // the hex id and one letter
/** A connection that has not named its run by then is dropped. */
const IDENTIFY_MS = 10_000;
/** A script the helper has not started by then is given up (502). */
const START_MS = 10_000;
/** What the server answers on each connection of a run once it holds it. */
const ACK = Buffer.from("+");

const SIGNAL_NAMES = new Map<number, NodeJS.Signals>(
  Object.entries(osConstants.signals).map(([name, n]) => [n, name as NodeJS.Signals]),
);

/** A run the helper was asked for, until its process and connections are all there. */
interface Pending {
  spec: LaunchSpec;
  resolve(child: HelperChild): void;
  reject(err: Error): void;
  pid?: number;
  out?: Socket;
  err?: Socket;
  in?: Socket;
  /** How it ended, when that came before it was handed over. */
  exit?: [code: number | null, signal: NodeJS.Signals | null];
}

/** A script started by the helper. */
class HelperChild extends EventEmitter implements LaunchedProcess {
  #exited = false;
  #open = 2;
  #closed = false;
  #code: number | null = null;
  #signal: NodeJS.Signals | null = null;

  constructor(
    readonly pid: number,
    readonly stdin: Socket | null,
    readonly stdout: Socket,
    readonly stderr: Socket,
  ) {
    super();
    const closed = () => {
      this.#open--;
      this.#maybeClose();
    };
    // A stream with nothing after its prefix may have ended and closed before it was handed over.
    for (const s of [stdout, stderr]) {
      if (s.closed) this.#open--;
      else s.once("close", closed);
    }
    stdout.on("error", () => {});
    stderr.on("error", () => {});
    stdin?.on("error", () => {});
  }

  exited(code: number | null, signal: NodeJS.Signals | null): void {
    if (this.#exited) return;
    this.#exited = true;
    this.#code = code;
    this.#signal = signal;
    this.emit("exit", code, signal);
    this.#maybeClose();
  }

  #maybeClose(): void {
    if (!this.#exited || this.#open > 0 || this.#closed) return;
    this.#closed = true;
    if (this.stdin && !this.stdin.destroyed) this.stdin.destroy();
    this.emit("close", this.#code, this.#signal);
  }
}

class Helper {
  readonly #proc: ChildProcess;
  readonly #server: Server;
  readonly #dir: string;
  readonly #socketPath: string;
  readonly #pending = new Map<string, Pending>();
  readonly #running = new Map<string, HelperChild>();
  #lines = "";
  #dead = false;
  #wasReady = false;
  /** Settles once: undefined when the helper is up, else why it could not start. */
  readonly ready: Promise<NodeJS.ErrnoException | undefined>;
  #onReady!: (failure: NodeJS.ErrnoException | undefined) => void;

  constructor() {
    this.#dir = mkdtempSync(path.join(tmpdir(), "trellis-cgi-"));
    this.#socketPath = path.join(this.#dir, "s");
    this.ready = new Promise((resolve) => (this.#onReady = resolve));
    this.#server = createServer((socket) => this.#connection(socket));
    this.#server.on("error", (err: NodeJS.ErrnoException) => this.#serverError(err));
    this.#server.listen(this.#socketPath);
    this.#server.unref();
    try {
      this.#proc = spawn("perl", ["-e", HELPER, this.#socketPath], {
        stdio: ["pipe", "pipe", "inherit"],
        env: { PATH: process.env.PATH ?? "/usr/local/bin:/usr/bin:/bin" },
        // Out of the terminal's process group: a Ctrl-C is for the server, which decides.
        detached: true,
      });
    } catch (err) {
      this.#server.close();
      this.cleanup();
      throw err;
    }
    // Listened to before anything else can throw: an 'error' nobody hears ends the server.
    this.#proc.once("error", (err: NodeJS.ErrnoException) => this.#die(`perl could not be started (${err.message})`, err));
    this.#proc.once("exit", (code, signal) => this.#die(`it exited (${code === null ? signal : `code ${code}`})`));
    this.#proc.unref();
    const { stdin, stdout } = this.#proc as ChildProcess & { stdin?: Socket | null; stdout?: Socket | null };
    // Out of descriptors, spawn makes no pipes and reports the failure by that 'error' event.
    if (!stdin || !stdout) return;
    stdin.unref();
    stdout.unref();
    stdin.on("error", () => {});
    stdout.on("error", (err) => this.#die(`reading from it failed (${err.message})`, err));
    stdout.setEncoding("latin1");
    stdout.on("data", (s: string) => this.#output(s));
  }

  info(): { pid: number; socketPath: string } {
    return { pid: this.#proc.pid!, socketPath: this.#socketPath };
  }

  run(spec: LaunchSpec): Promise<HelperChild> {
    if (this.#dead) return Promise.reject(new Error("The CGI helper process is gone; the next request starts a new one."));
    const fields = ["run", "", spec.file, spec.cwd, spec.uid === undefined ? "" : String(spec.uid), spec.gid === undefined ? "" : String(spec.gid)];
    fields.push(spec.stdin === "null" ? "null" : "pipe", String(spec.args.length), ...spec.args);
    for (const name of Object.keys(spec.env)) fields.push(`${name}=${spec.env[name]}`);
    for (const f of fields) {
      // As child_process.spawn: strings that cannot reach exec() are refused here.
      if (f.includes("\0")) return Promise.reject(Object.assign(new TypeError("A CGI argument or environment value contains a NUL byte."), { code: "ERR_INVALID_ARG_VALUE" }));
    }
    const id = randomBytes(ID_BYTES).toString("hex");
    fields[1] = id;
    const payload = Buffer.from(fields.join("\0"), "utf8");
    return new Promise((resolve, reject) => {
      // A helper that stopped answering (stopped, or starved) must not hold requests forever.
      const limit = spec.startTimeout ?? START_MS;
      const timer = setTimeout(() => {
        const p = this.#pending.get(id);
        if (p === undefined) return;
        this.#pending.delete(id);
        for (const s of [p.out, p.err, p.in]) s?.destroy();
        reject(new Error(`The CGI helper process did not start ${spec.file} within ${limit} ms.`));
      }, limit);
      timer.unref();
      const settle = <T>(f: (v: T) => void) => (v: T) => {
        clearTimeout(timer);
        f(v);
      };
      this.#pending.set(id, { spec, resolve: settle(resolve), reject: settle(reject) });
      (this.#proc.stdin as Socket).write(Buffer.concat([Buffer.from(`${payload.length}\n`), payload]));
    });
  }

  /** A connection from the helper: its first bytes name the run and which stream it is. */
  #connection(socket: Socket): void {
    socket.on("error", () => {});
    let head: Buffer = Buffer.alloc(0);
    const timer = setTimeout(() => socket.destroy(), IDENTIFY_MS);
    timer.unref();
    const onData = (chunk: Buffer) => {
      head = head.length === 0 ? chunk : Buffer.concat([head, chunk]);
      if (head.length < PREFIX) return;
      clearTimeout(timer);
      socket.off("data", onData);
      socket.off("close", onClose);
      // Paused, with what came after the prefix put back: it is the script's, for CGI to read.
      socket.pause();
      if (head.length > PREFIX) socket.unshift(head.subarray(PREFIX));
      const id = head.toString("latin1", 0, ID_BYTES * 2);
      const kind = head.toString("latin1", ID_BYTES * 2, PREFIX);
      const p = this.#pending.get(id);
      if (p === undefined || (kind !== "O" && kind !== "E" && kind !== "I") || p[slot(kind)] !== undefined) return void socket.destroy();
      p[slot(kind)] = socket;
      // The helper starts the script only once it has this from each of the run's connections.
      socket.write(ACK);
      this.#complete(id, p);
    };
    const onClose = () => clearTimeout(timer);
    socket.on("data", onData);
    socket.once("close", onClose);
  }

  #output(s: string): void {
    this.#lines += s;
    let nl: number;
    while ((nl = this.#lines.indexOf("\n")) >= 0) {
      const line = this.#lines.slice(0, nl);
      this.#lines = this.#lines.slice(nl + 1);
      const [what, id, a, b] = line.split(" ");
      if (what === "ready") {
        this.#wasReady = true;
        this.#onReady(undefined);
      } else if (what === "S") {
        const p = this.#pending.get(id);
        if (p) {
          p.pid = Number(a);
          this.#complete(id, p);
        } else {
          // A run given up before it started (it took too long, or its connections were
          // lost): nobody reads its output or times it, so it must not run on.
          killGroup(Number(a));
        }
      } else if (what === "F") {
        const p = this.#pending.get(id);
        if (p) {
          this.#pending.delete(id);
          for (const s of [p.out, p.err, p.in]) s?.destroy();
          p.reject(
            a === "EPIPE" || a === "ECONNRESET"
              ? exhausted("EMFILE", p.spec.file, "this process could not accept the script's connections (out of file descriptors)")
              : spawnError(a, Number(b), p.spec.file),
          );
        }
      } else if (what === "X") {
        const code = a === "-" ? null : Number(a);
        const signal = b === "-" ? null : (SIGNAL_NAMES.get(Number(b)) ?? null);
        const child = this.#running.get(id);
        if (child) {
          this.#running.delete(id);
          // Never in the turn that handed it over (its "S" may be in this same chunk): whoever
          // awaits the child listens in a microtask after this, and this comes later.
          setImmediate(() => child.exited(code, signal));
        } else {
          // A quick script can end before its connections are accepted here.
          const p = this.#pending.get(id);
          if (p) p.exit = [code, signal];
        }
      }
    }
  }

  /**
   * The socket failed. Before it listened, the helper cannot work ("EMFILE" and such: only for
   * now). Once listening, a failed accept loses the connections of runs still being set up:
   * those fail (503 for exhaustion) and the helper goes on.
   */
  #serverError(err: NodeJS.ErrnoException): void {
    if (!this.#server.listening) return this.#die(`its socket failed (${err.message})`, err);
    for (const [id, p] of this.#pending) {
      if (p.out && p.err && (p.spec.stdin === "null" || p.in)) continue;
      this.#pending.delete(id);
      for (const s of [p.out, p.err, p.in]) s?.destroy();
      if (p.pid !== undefined) killGroup(p.pid);
      p.reject(outOfResources(err) ? exhausted(err.code!, p.spec.file, err.message) : err);
    }
  }

  #complete(id: string, p: Pending): void {
    if (p.pid === undefined || !p.out || !p.err || (p.spec.stdin !== "null" && !p.in)) return;
    this.#pending.delete(id);
    const child = new HelperChild(p.pid, p.in ?? null, p.out, p.err);
    if (p.in) p.in.resume(); // nothing comes back on stdin; its end must still be read to close
    const exit = p.exit;
    if (exit === undefined) this.#running.set(id, child);
    // After the caller has had its turn to listen: it gets the child in a microtask, this comes later.
    else setImmediate(() => child.exited(exit[0], exit[1]));
    p.resolve(child);
  }

  /**
   * The helper is gone or could not start. `cause` is the system error behind it, if any:
   * when it says "out of descriptors or processes" the failure is for now, and the runs
   * waiting get that error (503); the next request starts a new helper either way.
   */
  #die(why: string, cause?: NodeJS.ErrnoException): void {
    if (this.#dead) return;
    this.#dead = true;
    if (current === this) current = undefined;
    const transient = outOfResources(cause);
    const err: NodeJS.ErrnoException = new Error(`The CGI helper process failed: ${why}.`);
    if (transient) err.code = cause!.code;
    this.#onReady(this.#wasReady ? undefined : err);
    for (const p of this.#pending.values()) {
      for (const s of [p.out, p.err, p.in]) s?.destroy();
      p.reject(err);
    }
    this.#pending.clear();
    // Their exit codes are lost with the helper; their output still ends on its own.
    for (const child of this.#running.values()) setImmediate(() => child.exited(null, null));
    this.#running.clear();
    this.#server.close();
    // Not when the spawn failed: its handle has pid 0 then, and a kill would reach this whole process group.
    if (this.#proc.pid !== undefined) this.#proc.kill("SIGKILL");
    this.cleanup();
    if (!this.#wasReady && !transient) helperWarning = `CGI scripts are started from the server process: the helper process could not run (${why}). Install perl, or set spawnHelper: false to choose this.`;
  }

  /**
   * Removes the socket directory (also at process exit). Never throws: this runs from event
   * handlers, and out of descriptors a recursive removal (which opens the directory) fails,
   * so the socket and the directory are removed by name first.
   */
  cleanup(): void {
    for (const remove of [() => unlinkSync(this.#socketPath), () => rmdirSync(this.#dir), () => rmSync(this.#dir, { recursive: true, force: true })]) {
      try {
        remove();
      } catch {
        // Already gone, or it cannot be removed now.
      }
    }
  }
}

/** SIGKILL to a script's process group (it is a group leader); nothing if it is gone. */
function killGroup(pid: number): void {
  if (!(pid > 0)) return;
  try {
    process.kill(-pid, "SIGKILL");
  } catch {
    // ESRCH: already gone.
  }
}

/** An error for a start that failed because the system is out of something (`outOfResources` is true for it). */
function exhausted(code: string, file: string, why: string): NodeJS.ErrnoException {
  const err: NodeJS.ErrnoException = new Error(`spawn ${file} ${code}: ${why}`);
  err.code = code;
  err.syscall = `spawn ${file}`;
  err.path = file;
  return err;
}

function slot(kind: string): "out" | "err" | "in" {
  return kind === "O" ? "out" : kind === "E" ? "err" : "in";
}

/** An error shaped as child_process.spawn reports one. */
function spawnError(name: string, errno: number, file: string): NodeJS.ErrnoException {
  const err: NodeJS.ErrnoException = new Error(`spawn ${file} ${name}`);
  err.code = name;
  err.errno = -errno;
  err.syscall = `spawn ${file}`;
  err.path = file;
  return err;
}

let current: Helper | undefined;
let unavailable = false;
let helperWarning: string | undefined;
let exitHook = false;

/** The running helper, started on first use; undefined when it cannot run here. */
async function helper(): Promise<Helper | undefined> {
  if (unavailable) return undefined;
  if (current === undefined) {
    try {
      current = new Helper();
    } catch (err) {
      if (outOfResources(err)) throw err;
      unavailable = true;
      helperWarning = `CGI scripts are started from the server process: the helper process could not be set up (${(err as Error).message}).`;
      return undefined;
    }
    if (!exitHook) {
      exitHook = true;
      process.once("exit", () => current?.cleanup());
    }
  }
  const h = current;
  const failure = await h.ready;
  if (failure === undefined) return h;
  // Out of descriptors or processes: this request fails (503), and the next one tries again.
  if (outOfResources(failure)) throw failure;
  // It did not come up (perl missing or broken here): not retried.
  unavailable = true;
  return undefined;
}
