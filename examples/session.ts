/**
 * A visit counter in a session: the TRELLIS_SESSION cookie names a session kept on the
 * server; /logout ends it. Open it in two browsers (or a private window): two counters.
 *   npx ts-node examples/session.ts   then open /
 */
import { escapeHtml, redirectTo, Request, Resource } from "trellis";
import { serveExample } from "./serve";

/** What this example keeps in a session. */
interface Visits extends Record<string, unknown> {
  visits: number;
  first: string;
}

class Counter extends Resource {
  override isLeaf = true;
  async render_GET(request: Request): Promise<string> {
    const session = await request.getSession<Visits>();
    const visits = (session.get("visits") ?? 0) + 1;
    await session.set("visits", visits);
    if (session.get("first") === undefined) await session.set("first", new Date().toISOString());
    request.setHeader("Content-Type", "text/html; charset=utf-8");
    request.setHeader("Cache-Control", "no-store");
    return `<!DOCTYPE html><html><head><meta charset="utf-8"><title>Visits</title></head>
<body style="font:16px/1.5 system-ui,sans-serif;max-width:40rem;margin:2rem auto">
<h1>You have been here ${visits} time${visits === 1 ? "" : "s"}</h1>
<p>Session <code>${escapeHtml(session.uid.slice(0, 8))}…</code>, started ${escapeHtml(String(session.get("first")))}.
It expires after 15 idle minutes.</p>
<p><a href="">Reload</a> · <a href="logout">Log out</a></p></body></html>`;
  }
}

class Logout extends Resource {
  override isLeaf = true;
  async render_GET(request: Request): Promise<string> {
    const session = await request.getSession();
    await session.expire();
    return redirectTo("./", request);
  }
}

/** The tree this example serves. */
export function build(): Resource {
  const root = new Resource();
  root.putChild("", new Counter());
  root.putChild("logout", new Logout());
  return root;
}

if (require.main === module) void serveExample(build(), "session", "/");
