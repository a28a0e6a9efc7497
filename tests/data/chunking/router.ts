// A tiny path router: routes like "/users/:id" match paths and hand their parameters to a handler.

export type Params = Record<string, string>;
export type Handler<T> = (params: Params, query: URLSearchParams) => T;

interface Route<T> {
  method: string;
  parts: string[];
  handler: Handler<T>;
}

export class NotFound extends Error {
  constructor(public readonly method: string, public readonly path: string) {
    super(`no route for ${method} ${path}`);
  }
}

export class Router<T> {
  private readonly routes: Route<T>[] = [];

  /** Add a route; later routes never shadow earlier ones. */
  add(method: string, pattern: string, handler: Handler<T>): this {
    this.routes.push({ method: method.toUpperCase(), parts: split(pattern), handler });
    return this;
  }

  get(pattern: string, handler: Handler<T>): this {
    return this.add("GET", pattern, handler);
  }

  post(pattern: string, handler: Handler<T>): this {
    return this.add("POST", pattern, handler);
  }

  /** Run the first route that matches, or throw NotFound. */
  handle(method: string, url: string): T {
    const [path, search = ""] = url.split("?", 2);
    const parts = split(path);
    for (const route of this.routes) {
      if (route.method !== method.toUpperCase()) {
        continue;
      }
      const params = match(route.parts, parts);
      if (params !== null) {
        return route.handler(params, new URLSearchParams(search));
      }
    }
    throw new NotFound(method, path);
  }
}

function split(path: string): string[] {
  return path.split("/").filter((part) => part.length > 0);
}

/** The parameters of a match, or null when the pattern does not match. */
export function match(pattern: string[], parts: string[]): Params | null {
  const params: Params = {};
  for (let i = 0; i < pattern.length; i++) {
    const expected = pattern[i];
    if (expected === "*") {
      params["*"] = parts.slice(i).map(decodeURIComponent).join("/");
      return params;
    }
    const actual = parts[i];
    if (actual === undefined) {
      return null;
    }
    if (expected.startsWith(":")) {
      params[expected.slice(1)] = decodeURIComponent(actual);
    } else if (expected !== actual) {
      return null;
    }
  }
  return pattern.length === parts.length ? params : null;
}

export const formatRoute = (method: string, pattern: string): string => `${method.toUpperCase()} ${pattern}`;
