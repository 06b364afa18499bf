/**
 * Where a request came from and what it asked for: the peer and local addresses, the
 * `X-Forwarded-*` headers a trusted proxy adds, and the host, scheme and URLs built from them.
 */
import type { TLSSocket } from "node:tls";
import type { Address, NodeRequest } from "../iweb";

/** The entry of a comma-separated `X-Forwarded-*` header that the trust setting selects. */
export function forwarded(req: NodeRequest, trust: boolean | number, name: string): string | undefined {
  if (trust === false || trust === 0) return undefined;
  const raw = req.headers[name];
  const v = Array.isArray(raw) ? raw.join(",") : raw;
  if (!v) return undefined;
  const parts = v.split(",");
  const i = trust === true ? 0 : Math.max(0, parts.length - trust);
  return parts[i].trim() || undefined;
}

/** The client's address: the peer's, or the forwarded one when the proxy is trusted. */
export function clientAddress(req: NodeRequest, trust: boolean | number): Address {
  const via = forwarded(req, trust, "x-forwarded-for");
  if (via) return { type: "TCP", host: via.replace(/^\[(.*)\]$/, "$1"), port: 0 };
  const s = req.socket;
  if (!s || s.remoteAddress === undefined) return { type: "UNIX", host: "", port: 0 };
  return { type: "TCP", host: s.remoteAddress, port: s.remotePort ?? 0 };
}

/** The server's (local) address of the connection. */
export function localAddress(req: NodeRequest): Address {
  const s = req.socket;
  if (!s || s.localAddress === undefined) return { type: "UNIX", host: "", port: 0 };
  return { type: "TCP", host: s.localAddress, port: s.localPort ?? 0 };
}

/** True over TLS, or when a trusted proxy says `X-Forwarded-Proto: https`. */
export function isSecure(req: NodeRequest, trust: boolean | number): boolean {
  const proto = forwarded(req, trust, "x-forwarded-proto");
  if (proto) return proto.toLowerCase() === "https";
  return (req.socket as TLSSocket | undefined)?.encrypted === true;
}

/**
 * The host the client asked for, with its port if it gave one: a trusted proxy's
 * `X-Forwarded-Host`, else the absolute-form target's authority (which replaces `Host`, RFC
 * 9112 §3.2.2), else `Host` (`:authority` on HTTP/2), else the local address.
 */
export function hostHeader(req: NodeRequest, trust: boolean | number, authority: string | undefined): string {
  const host = forwarded(req, trust, "x-forwarded-host") ?? authority ?? req.headers.host ?? (req.headers[":authority"] as string | undefined);
  if (host) return host;
  const local = localAddress(req);
  const h = local.host.includes(":") ? `[${local.host}]` : local.host || "localhost";
  return local.port ? `${h}:${local.port}` : h;
}

/** A host header's name part: no port, no IPv6 brackets, lower case. */
export function hostname(host: string): string {
  if (host.startsWith("[")) {
    const end = host.indexOf("]");
    return end > 0 ? host.slice(1, end) : host;
  }
  const colon = host.indexOf(":");
  return (colon < 0 ? host : host.slice(0, colon)).toLowerCase();
}
