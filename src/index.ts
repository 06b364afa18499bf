/** trellis: a resource-tree web server for Node. Everything public is exported here. */
export type { IRequest, IResource, ISite, ISession, SessionStore, SessionRecord, SessionData, ResponseEncoder, RenderResult, Address, NodeRequest, NodeResponse, HeaderValue } from "./iweb";
export { Resource, ErrorPage, NoResource, ForbiddenResource, HttpError, getChildForRequest, defaultErrorPage } from "./resource";
export { Request, CACHED, ConnectionLost, parseTarget } from "./request";
export type { ParsedTarget } from "./request";
export { Site, NOT_DONE_YET } from "./server";
export type { SiteOptions, ListenOptions, AccessLog } from "./server";
export { Redirect, ChildRedirector, ParentRedirect, DeferredResource, redirectTo } from "./util";
export { escapeHtml } from "./internal/html";
export { parseHttpDate, formatHttpDate } from "./internal/conditional";
export { VERSION } from "./internal/version";
export { File, DirectoryLister, ASISProcessor, Registry } from "./static";
export type {
  FileOptions,
  Processor,
  ProcessorClass,
  ProcessorFunction,
  DotfilesPolicy,
  SymlinkPolicy,
  PrecompressedEncoding,
  CacheControl,
  DirectoryListerOptions,
  ListingEntry,
  TypeAndEncoding,
} from "./static";
export { ResourceScript, ResourceScriptError } from "./script";
export { BodyError, UploadedFile, DEFAULT_BODY_LIMITS, watchForwardedBody } from "./internal/body";
export type { BodyLimits, BodyPace, BodySink, ForwardedBody, ParsedForm } from "./internal/body";
export type { CookieOptions } from "./internal/cookies";
export { Session, MemorySessionStore, SessionManager, SESSION_COOKIE, SECURE_SESSION_COOKIE, DEFAULT_SESSION_TIMEOUT } from "./session";
export type { MemorySessionStoreOptions, SessionManagerOptions } from "./session";
export { EncodingResourceWrapper, GzipEncoderFactory, BrotliEncoderFactory, negotiateEncoding, parseAcceptEncoding, isCompressible } from "./encoding";
export type { EncoderFactory, EncoderFactoryOptions, EncodingWrapperOptions } from "./encoding";
export { CGIScript, CGIDirectory, FilteredScript, PerlScript, PHPScript, CGILimiter } from "./cgi";
export type { CGIOptions, CGIExit, CGIRemoteUser, CGIRelease } from "./cgi";
