/**
 * Static files: a File serving examples/static/ with listings, index files, an `.rjs`
 * resource script (found without its extension) and an `.asis` file.
 *   npx ts-node examples/static.ts   then open http://127.0.0.1:8080/
 */
import { join } from "node:path";
import { ASISProcessor, File, ResourceScript } from "trellis";
import { serveExample } from "./serve";

/** The directory this example serves. */
export const STATIC_DIR = join(__dirname, "static");

/** A File for examples/static/, set up the way `trellis web --path` does. */
export function build(): File {
  const files = new File(STATIC_DIR, {
    processors: { ".rjs": ResourceScript, ".asis": ASISProcessor },
    cacheControl: "no-cache",
  });
  // `/hello` finds hello.rjs.
  files.ignoreExt(".rjs");
  return files;
}

if (require.main === module) void serveExample(build(), "static files", "/");
