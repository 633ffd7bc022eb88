/**
 * The two requests the controller makes of the API server, a GET of one list page and a watch,
 * over Node.js' own `http`/`https` with the TLS settings and credentials that the kubeconfig gives
 * (`KubeConfig.applyToHTTPSOptions`: certificates, tokens refreshed from their file or plugin,
 * proxies).
 *
 * The Kubernetes client's generated API classes and its `Watch` would do the same through
 * `fetch`: they load the models of every API group and the WHATWG fetch implementation, about
 * 20 MiB of a node agent's resident memory, to read two kinds of object.
 */
import type { IncomingMessage, RequestOptions } from "node:http";
import { request as httpRequest } from "node:http";
import { request as httpsRequest } from "node:https";
import type { KubeConfig } from "@kubernetes/client-node";

/** A request the API server answered with an error status; `statusCode` as the server sent it. */
export class ApiError extends Error {
  constructor(
    message: string,
    readonly statusCode: number,
  ) {
    super(message);
    this.name = "ApiError";
  }
}

/** Query parameters; undefined values are left out. */
export type Query = Readonly<Record<string, string | number | undefined>>;

/** Ends a watch; what the Kubernetes client's `Watch.watch` resolves with, too. */
export interface WatchHandle {
  abort(): void;
}

/** The watch call of the Kubernetes client's `Watch`, which tests may stand in for. */
export interface WatchClient {
  /**
   * Streams the events of a watch to `onEvent` and calls `done` once when the stream ends or
   * fails. Resolves once the server answered 200; when it did not, `done` is called with the
   * error before the promise resolves.
   */
  watch(
    path: string,
    query: Query,
    onEvent: (type: string, object: unknown) => void,
    done: (error: unknown) => void,
  ): Promise<WatchHandle>;
}

/** How long a request may wait for the server's answer to start. */
const RESPONSE_TIMEOUT_MS = 60_000;
/** TCP keepalive of a watch's connection, as the Kubernetes client sets it. */
const KEEPALIVE_MS = 30_000;

/** See the module comment. */
export class ApiClient implements WatchClient {
  constructor(private readonly kubeConfig: KubeConfig) {}

  /** The API server's URL. */
  get server(): string {
    return this.kubeConfig.getCurrentCluster()?.server ?? "";
  }

  /** GETs `path` and parses the JSON answer. */
  async get(path: string, query: Query, signal?: AbortSignal): Promise<unknown> {
    const response = await this.send(path, query, signal);
    const body = await readBody(response);
    if (response.statusCode !== 200) throw apiError(path, response, body);
    return JSON.parse(body);
  }

  async watch(
    path: string,
    query: Query,
    onEvent: (type: string, object: unknown) => void,
    done: (error: unknown) => void,
  ): Promise<WatchHandle> {
    const controller = new AbortController();
    let ended = false;
    const end = (error: unknown) => {
      if (ended) return;
      ended = true;
      controller.abort();
      done(error);
    };
    try {
      const response = await this.send(path, { ...query, watch: "true" }, controller.signal);
      if (response.statusCode !== 200) {
        throw apiError(path, response, await readBody(response));
      }
      response.socket?.setKeepAlive(true, KEEPALIVE_MS);
      response.setEncoding("utf8");
      let pending = "";
      response.on("data", (chunk: string) => {
        pending += chunk;
        let newline = pending.indexOf("\n");
        while (newline !== -1) {
          const line = pending.slice(0, newline);
          pending = pending.slice(newline + 1);
          newline = pending.indexOf("\n");
          if (line.trim() === "") continue;
          let event: { type?: unknown; object?: unknown };
          try {
            event = JSON.parse(line);
          } catch {
            end(new Error(`${path}: the watch sent a line that is not JSON`));
            return;
          }
          onEvent(String(event.type), event.object);
        }
      });
      response.on("end", () => end(null));
      response.on("error", (error) => end(ended ? null : error));
      response.on("close", () => end(null));
    } catch (error) {
      end(error);
    }
    return controller;
  }

  /** Sends a GET; resolves with the response once its headers arrived. */
  private async send(path: string, query: Query, signal?: AbortSignal): Promise<IncomingMessage> {
    const url = new URL(`${this.server}${path}`);
    for (const [key, value] of Object.entries(query)) {
      if (value !== undefined) url.searchParams.set(key, String(value));
    }
    const options: RequestOptions & { headers: Record<string, string> } = {
      method: "GET",
      headers: { Accept: "application/json" },
    };
    await this.kubeConfig.applyToHTTPSOptions(options);
    const request = url.protocol === "http:" ? httpRequest : httpsRequest;
    return new Promise<IncomingMessage>((resolve, reject) => {
      const outgoing = request(url, { ...options, signal }, resolve);
      outgoing.setTimeout(RESPONSE_TIMEOUT_MS, () =>
        outgoing.destroy(new Error(`${path}: no answer within ${RESPONSE_TIMEOUT_MS / 1000} s`)),
      );
      outgoing.on("response", () => outgoing.setTimeout(0));
      outgoing.on("error", reject);
      outgoing.end();
    });
  }
}

function readBody(response: IncomingMessage): Promise<string> {
  return new Promise((resolve, reject) => {
    let body = "";
    response.setEncoding("utf8");
    response.on("data", (chunk: string) => {
      body += chunk;
    });
    response.on("end", () => resolve(body));
    response.on("error", reject);
  });
}

/** The server's own message (a `Status` object's) where it sent one. */
function apiError(path: string, response: IncomingMessage, body: string): ApiError {
  let message = response.statusMessage ?? "";
  try {
    const status = JSON.parse(body) as { message?: unknown };
    if (typeof status.message === "string") message = status.message;
  } catch {
    // Not a Status: the status line says enough.
  }
  return new ApiError(
    `GET ${path}: ${response.statusCode} ${message}`.trim(),
    response.statusCode ?? 0,
  );
}
