/** trellis' version, sent in the default `Server` header. Kept equal to package.json by a test. */
export const VERSION = "0.1.0";
