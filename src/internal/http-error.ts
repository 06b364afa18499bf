/**
 * An error that is an HTTP answer: thrown or passed to `request.processingFailed()`, it is
 * answered with its own status and a page that says `detail` (plain text, meant for the
 * visitor) instead of a 500. The module that raises one logs whatever the operator needs to
 * know; the failsafe does not log it again.
 */
export class HttpError extends Error {
  /** The HTTP status to answer with (4xx or 5xx). */
  readonly status: number;
  /** The page title ("Bad Gateway"). */
  readonly brief: string;
  /** What the visitor reads: no internals (back-end names, paths, stack traces). */
  readonly detail: string;
  /** Headers the answer carries (`Retry-After`, `Allow`, …). */
  readonly headers?: Readonly<Record<string, string>>;

  constructor(status: number, brief: string, detail: string = brief, headers?: Readonly<Record<string, string>>) {
    super(detail);
    this.name = "HttpError";
    this.status = status;
    this.brief = brief;
    this.detail = detail;
    this.headers = headers;
  }
}
