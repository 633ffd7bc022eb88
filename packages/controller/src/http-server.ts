/**
 * The metrics and health endpoints: small `node:http` servers, one per bind address.
 */
import { createServer, type Server } from "node:http";
import type { Registry } from "prom-client";
import type { HealthSource, HealthState } from "./health.js";

/** Parses `host:port`, `:port` or `[v6]:port`; `0` disables the server. */
export function parseBindAddress(
  option: string,
  text: string,
): { host: string; port: number } | undefined {
  if (text === "0") return undefined;
  const match = /^(?:\[([0-9a-fA-F:.]+)\]|([^:[\]]*)):(\d{1,5})$/.exec(text);
  const port = Number(match?.[3]);
  if (!match || port > 65535) {
    throw new Error(`${option}: ${JSON.stringify(text)} is not host:port, :port, [ipv6]:port or 0`);
  }
  return { host: match[1] ?? (match[2] || "0.0.0.0"), port };
}

/** Starts an HTTP server with the given routes; resolves once it listens. */
async function serve(
  address: { host: string; port: number },
  routes: Record<string, () => Promise<{ status: number; body: string; type?: string }>>,
): Promise<Server> {
  const server = createServer((request, response) => {
    const path = (request.url ?? "/").split("?")[0] ?? "/";
    const route = routes[path];
    if (route === undefined || (request.method !== "GET" && request.method !== "HEAD")) {
      response.writeHead(404).end("not found\n");
      return;
    }
    route().then(
      ({ status, body, type }) => {
        response
          .writeHead(status, { "content-type": type ?? "text/plain; charset=utf-8" })
          .end(body);
      },
      (error: unknown) => {
        response.writeHead(500).end(`${(error as Error).message}\n`);
      },
    );
  });
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(address.port, address.host, () => {
      server.off("error", reject);
      resolve();
    });
  });
  return server;
}

/** Routes for `/metrics`. */
function metricsRoutes(registry: Registry) {
  return {
    "/metrics": async () => ({
      status: 200,
      body: await registry.metrics(),
      type: registry.contentType,
    }),
  };
}

function answer(state: HealthState) {
  return state.ok ? { status: 200, body: "ok\n" } : { status: 503, body: `${state.reason}\n` };
}

/** Routes for `/healthz` and `/readyz`. */
function healthRoutes(health: HealthSource) {
  return {
    "/healthz": async () => answer(health.alive()),
    "/readyz": async () => answer(health.ready()),
  };
}

/** Where the controller's endpoints listen; an address left out is not served. */
export interface Endpoints {
  /** `/metrics`. */
  readonly metrics?: { host: string; port: number } | undefined;
  /** `/healthz` and `/readyz`. */
  readonly health?: { host: string; port: number } | undefined;
  readonly registry: Registry;
  readonly healthSource: HealthSource;
}

/**
 * Starts the servers of the endpoints; resolves once they listen. When one cannot listen, those
 * already started are closed again and the error is thrown.
 */
export async function serveEndpoints(endpoints: Endpoints): Promise<Server[]> {
  const servers: Server[] = [];
  try {
    if (endpoints.metrics) {
      servers.push(await serve(endpoints.metrics, metricsRoutes(endpoints.registry)));
    }
    if (endpoints.health) {
      servers.push(await serve(endpoints.health, healthRoutes(endpoints.healthSource)));
    }
  } catch (error) {
    await Promise.all(servers.map(closeServer));
    throw error;
  }
  return servers;
}

/** Closes a server, ending idle keep-alive connections. */
export function closeServer(server: Server): Promise<void> {
  return new Promise((resolve) => {
    server.close(() => resolve());
    server.closeIdleConnections();
  });
}
