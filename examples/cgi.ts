/**
 * CGI: a Perl script and a PHP page run per request (PerlScript, PHPScript), and a
 * CGIDirectory where every executable is a script and the rest of the path is PATH_INFO.
 * Needs perl and php-cgi.
 *   npx ts-node examples/cgi.ts   then open http://127.0.0.1:8080/hello.pl
 */
import { join } from "node:path";
import { CGIDirectory, PerlScript, PHPScript, Resource } from "trellis";
import { serveExample } from "./serve";

/** The scripts this example runs. */
export const CGI_BIN = join(__dirname, "cgi-bin");

/** The tree: /hello.pl, /form.php, and /bin/ for the whole directory. */
export function build(): Resource {
  const root = new Resource();
  // A short time limit: a demo script that hangs is killed (and answered 504) after 10 s.
  const options = { timeout: 10_000 };
  root.putChild("hello.pl", new PerlScript(join(CGI_BIN, "hello.pl"), options));
  root.putChild("form.php", new PHPScript(join(CGI_BIN, "form.php"), options));
  // Executables only: form.php is not one, so /bin/form.php is a 403.
  root.putChild("bin", new CGIDirectory(CGI_BIN, options));
  return root;
}

if (require.main === module) void serveExample(build(), "CGI", "/hello.pl");
