/** MIME types by file extension, for the server's responses and the page's downloads. */
const MIME: Record<string, string> = {
  html: "text/html; charset=utf-8",
  js: "text/javascript; charset=utf-8",
  json: "application/json",
  map: "application/json",
  css: "text/css; charset=utf-8",
  md: "text/markdown; charset=utf-8",
  svg: "image/svg+xml",
  png: "image/png",
};

/** The MIME type of a file named `name`; `application/octet-stream` for an unknown extension. */
export function mimeType(name: string): string {
  return MIME[name.split(".").pop() ?? ""] ?? "application/octet-stream";
}
