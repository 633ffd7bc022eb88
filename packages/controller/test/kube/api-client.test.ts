/**
 * The controller's two requests (a list page, a watch) against a real kube-apiserver, as the
 * controller's ServiceAccount makes them: answers, the server's own error messages, events larger
 * than one chunk of the stream, and a watch ended from either side. No HTTP mocks.
 */
import {
  envtestTestsEnabled,
  eventually,
  startTestApiServer,
  type TestApiServer,
} from "@ipvs-node-controller/test-support";
import { KubeConfig } from "@kubernetes/client-node";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ApiClient, ApiError } from "../../src/kube/api-client.js";
import { controllerKubeconfig } from "../support/node-fixture.js";

const enabled = (await envtestTestsEnabled("API client tests")) !== undefined;

describe.skipIf(!enabled)("ApiClient on a real API server", () => {
  let api: TestApiServer;
  /** With the controller's ServiceAccount token: list and watch Services and Nodes, no more. */
  let client: ApiClient;

  beforeAll(async () => {
    api = await startTestApiServer();
    const kubeConfig = new KubeConfig();
    kubeConfig.loadFromFile(await controllerKubeconfig(api));
    client = new ApiClient(kubeConfig);
    await api.kubectl(["create", "namespace", "client"]);
  }, 180_000);
  afterAll(async () => {
    await api?.stop();
  }, 60_000);

  /** A Service whose annotation makes its JSON line `size` bytes or more. */
  const service = (name: string, size: number) =>
    JSON.stringify({
      apiVersion: "v1",
      kind: "Service",
      metadata: { namespace: "client", name, annotations: { filler: "x".repeat(size) } },
      spec: { type: "ClusterIP", ports: [{ port: 80 }] },
    });

  it("GETs a list page with its continue token", async () => {
    for (const name of ["a", "b", "c"]) {
      await api.kubectl(["apply", "-f", "-"], { input: service(name, 10) });
    }
    const first = (await client.get("/api/v1/namespaces/client/services", { limit: 2 })) as {
      items: { metadata: { name: string } }[];
      metadata: { continue?: string };
    };
    expect(first.items.map((item) => item.metadata.name)).toEqual(["a", "b"]);
    expect(first.metadata.continue).toBeTruthy();
    const second = (await client.get("/api/v1/namespaces/client/services", {
      limit: 2,
      continue: first.metadata.continue,
    })) as { items: { metadata: { name: string } }[] };
    expect(second.items.map((item) => item.metadata.name)).toEqual(["c"]);
  });

  it("fails with the status code and the server's message", async () => {
    const forbidden = await client.get("/api/v1/secrets", {}).catch((error: unknown) => error);
    expect(forbidden).toBeInstanceOf(ApiError);
    expect((forbidden as ApiError).statusCode).toBe(403);
    expect((forbidden as ApiError).message).toMatch(
      /^GET \/api\/v1\/secrets: 403 secrets is forbidden: User "system:serviceaccount:kube-system:ipvs-node-controller" cannot list/,
    );
    const missing = await client
      .get("/api/v1/namespaces/client/services/nope", {})
      .catch((error: unknown) => error);
    expect((missing as ApiError).statusCode).toBe(404);
    expect((missing as ApiError).message).toContain('services "nope" not found');
  });

  it("streams watch events whole, also those larger than a chunk of the stream", async () => {
    const events: { type: string; name: string; size: number }[] = [];
    let ended: unknown = "not yet";
    const handle = await client.watch(
      "/api/v1/namespaces/client/services",
      { resourceVersion: "0", allowWatchBookmarks: "true" },
      (type, object) => {
        const { metadata } = object as { metadata: { name: string; annotations?: object } };
        events.push({ type, name: metadata.name, size: JSON.stringify(object).length });
      },
      (error) => {
        ended = error;
      },
    );
    // 100 KB and 250 KB lines (annotations may hold 256 KiB) arrive in many chunks of the
    // response.
    await api.kubectl(["create", "-f", "-"], { input: service("big", 100_000) });
    await api.kubectl(["create", "-f", "-"], { input: service("huge", 250_000) });
    await eventually("both large Services arrive", () =>
      ["big", "huge"].every((name) => events.some((event) => event.name === name)),
    );
    const big = events.find((event) => event.name === "big");
    const huge = events.find((event) => event.name === "huge");
    expect(big).toMatchObject({ type: "ADDED" });
    expect(big?.size).toBeGreaterThan(100_000);
    expect(huge?.size).toBeGreaterThan(250_000);
    expect(ended).toBe("not yet");
    handle.abort();
    await eventually("the end is reported", () => ended !== "not yet");
  });

  it("reports a refused watch to done before it resolves", async () => {
    const order: string[] = [];
    let error: unknown;
    await client.watch(
      "/api/v1/secrets",
      {},
      () => order.push("event"),
      (reason) => {
        error = reason;
        order.push("done");
      },
    );
    order.push("resolved");
    expect(order).toEqual(["done", "resolved"]);
    expect((error as ApiError).statusCode).toBe(403);
  });

  it("ends a watch the server closes, with no error", async () => {
    let ended: unknown = "not yet";
    await client.watch(
      "/api/v1/namespaces/client/services",
      { timeoutSeconds: "1" },
      () => {},
      (error) => {
        ended = error;
      },
    );
    await eventually("the server ends the watch", () => ended !== "not yet", 10_000);
    expect(ended).toBeNull();
  });
});
