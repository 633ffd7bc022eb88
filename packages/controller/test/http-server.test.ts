/** The metrics and health endpoints on the loopback: what each path answers, and a taken port. */
import type { Server } from "node:http";
import { type AddressInfo, createServer } from "node:net";
import { Counter, Registry } from "prom-client";
import { afterEach, describe, expect, it } from "vitest";
import { closeServer, serveEndpoints } from "../src/http-server.js";

const loopback = (port: number) => ({ host: "127.0.0.1", port });
const portOf = (server: { address(): AddressInfo | string | null }) =>
  (server.address() as AddressInfo).port;

/** A port nothing listens on (it was free a moment ago). */
async function freePort(): Promise<number> {
  const probe = createServer();
  await new Promise<void>((resolve) => probe.listen(0, "127.0.0.1", resolve));
  const port = portOf(probe);
  await new Promise((resolve) => probe.close(resolve));
  return port;
}

describe("serveEndpoints", () => {
  const started: Server[] = [];
  afterEach(async () => {
    await Promise.all(started.splice(0).map(closeServer));
  });

  it("answers /metrics, /healthz and /readyz on their own ports, and 404 to anything else", async () => {
    const registry = new Registry();
    new Counter({ name: "test_counter_total", help: "a counter", registers: [registry] }).inc();
    const servers = await serveEndpoints({
      metrics: loopback(0),
      health: loopback(0),
      registry,
      healthSource: {
        alive: () => ({ ok: true }),
        ready: () => ({ ok: false, reason: "caches not synced" }),
      },
    });
    started.push(...servers);
    const [metricsUrl, healthUrl] = servers.map((server) => `http://127.0.0.1:${portOf(server)}`);
    const metrics = await fetch(`${metricsUrl}/metrics`);
    expect(metrics.status).toBe(200);
    expect(await metrics.text()).toMatch(/^test_counter_total 1$/m);
    expect((await fetch(`${metricsUrl}/healthz`)).status).toBe(404);
    const alive = await fetch(`${healthUrl}/healthz?verbose`);
    expect([alive.status, await alive.text()]).toEqual([200, "ok\n"]);
    const ready = await fetch(`${healthUrl}/readyz`);
    expect([ready.status, await ready.text()]).toEqual([503, "caches not synced\n"]);
    expect((await fetch(`${healthUrl}/readyz`, { method: "POST" })).status).toBe(404);
    expect((await fetch(`${healthUrl}/metrics`)).status).toBe(404);
  });

  it("closes the servers it started when an address is taken, and throws", async () => {
    const taken = await serveEndpoints({
      health: loopback(0),
      registry: new Registry(),
      healthSource: { alive: () => ({ ok: true }), ready: () => ({ ok: true }) },
    });
    started.push(...taken);
    const metricsPort = await freePort();
    await expect(
      serveEndpoints({
        metrics: loopback(metricsPort),
        health: loopback(portOf(taken[0] as Server)),
        registry: new Registry(),
        healthSource: { alive: () => ({ ok: true }), ready: () => ({ ok: true }) },
      }),
    ).rejects.toThrow(/EADDRINUSE/);
    await expect(fetch(`http://127.0.0.1:${metricsPort}/metrics`)).rejects.toThrow();
  });
});
