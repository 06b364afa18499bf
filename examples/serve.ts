/**
 * How every example runs on its own: listen on $PORT (default 8080) and $HOST (default
 * 127.0.0.1), print the URL, log requests to stdout, and close gracefully on Ctrl-C.
 */
import type { AddressInfo } from "node:net";
import { IResource, Site, SiteOptions } from "trellis";

/** Serves `root` and prints `name: http://host:port/path`. Resolves with the site. */
export async function serveExample(root: IResource, name: string, path = "/", options: SiteOptions = {}): Promise<Site> {
  const host = process.env.HOST ?? "127.0.0.1";
  const site = new Site(root, { log: process.stdout, ...options });
  const server = await site.listen({ port: Number(process.env.PORT ?? 8080), host });
  const { port } = server.address() as AddressInfo;
  console.log(`${name}: http://${host}:${port}${path}`);
  const stop = () => void site.close().then(() => process.exit(0));
  process.once("SIGINT", stop);
  process.once("SIGTERM", stop);
  return site;
}
