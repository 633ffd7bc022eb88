/**
 * The reflector against a real kube-apiserver: initial list, watch events, an expired resource
 * version (410 Gone) and an API-server restart. No HTTP mocks.
 */

import { type ServiceInput, sameServiceInput, trimService } from "@ipvs-node-controller/core";
import {
  envtestTestsEnabled,
  eventually,
  startTestApiServer,
  type TestApiServer,
} from "@ipvs-node-controller/test-support";
import { CoreV1Api, KubeConfig, Watch } from "@kubernetes/client-node";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { Reflector, type ReflectorEvent } from "../src/kube/reflector.js";

const enabled = (await envtestTestsEnabled("reflector tests")) !== undefined;

describe.skipIf(!enabled)("Reflector on a real API server", () => {
  let api: TestApiServer;
  let kubeConfig: KubeConfig;

  beforeAll(async () => {
    // Frequent compaction, with watches served straight from etcd, makes an old resource version
    // really expire (410 Gone), as it does on a busy cluster after a long disconnection.
    api = await startTestApiServer({
      extraApiServerArgs: ["--etcd-compaction-interval=1s", "--watch-cache=false"],
    });
    kubeConfig = new KubeConfig();
    kubeConfig.loadFromFile(api.kubeconfigPath);
  }, 180_000);
  afterAll(async () => {
    await api?.stop();
  }, 60_000);

  const service = (name: string, ip: string) =>
    JSON.stringify({
      apiVersion: "v1",
      kind: "Service",
      metadata: { namespace: "default", name, annotations: { big: "x".repeat(2000) } },
      spec: { type: "ClusterIP", externalIPs: [ip], ports: [{ port: 80 }] },
    });

  it("lists in pages, follows changes, relists after 410 Gone and survives a restart", async () => {
    for (let i = 0; i < 7; i++) {
      await api.kubectl(["apply", "-f", "-"], { input: service(`s${i}`, `192.0.2.${i + 1}`) });
    }
    await new Promise((resolve) => setTimeout(resolve, 3000)); // let a compaction pass
    const api1 = kubeConfig.makeApiClient(CoreV1Api);
    const events: ReflectorEvent[] = [];
    let changes = 0;
    let lists = 0;
    const reflector = new Reflector<ServiceInput>({
      name: "services",
      list: async (token) => {
        const page = await api1.listServiceForAllNamespaces({ limit: 3, _continue: token });
        lists += 1;
        // The first complete list pretends to be ancient, so the watch that follows is refused
        // with 410 Gone ("too old resource version"), as after a long disconnection.
        if (lists <= 3 && page.metadata?._continue === undefined) {
          return { ...page, metadata: { ...page.metadata, resourceVersion: "1" } };
        }
        return page;
      },
      watchPath: "/api/v1/services",
      watch: new Watch(kubeConfig),
      trim: trimService,
      equivalent: sameServiceInput,
      onChange: () => {
        changes += 1;
      },
      onEvent: (event) => events.push(event),
      backoff: { initialMs: 100, maxMs: 1000 },
    });
    reflector.start();
    try {
      await eventually("the services are listed", () => reflector.hasSynced);
      await eventually("a relist after the expired version", () =>
        events.some((event) => event.type === "expired"),
      );
      // Two complete lists of 3 pages each (8 Services with "kubernetes"), the second after the 410.
      await eventually("the second complete list", () => lists >= 6);
      const stored = reflector.store.get("default/s3");
      expect(stored?.spec?.externalIPs).toEqual(["192.0.2.4"]);
      expect(stored?.metadata?.annotations).toBeUndefined(); // trimmed: only what the core reads
      expect((stored?.metadata as { managedFields?: unknown })?.managedFields).toBeUndefined();

      await api.kubectl(["delete", "service", "s0"]);
      await api.kubectl(["apply", "-f", "-"], { input: service("s1", "192.0.2.99") });
      await eventually("the delete and the update arrive", () => {
        const s1 = reflector.store.get("default/s1");
        return !reflector.store.has("default/s0") && s1?.spec?.externalIPs?.[0] === "192.0.2.99";
      });

      // A change the core does not read (a label) keeps the stored object and triggers no sync;
      // the next real change, watched in order after it, proves the label event was processed.
      const s2 = reflector.store.get("default/s2");
      const beforeLabel = changes;
      await api.kubectl(["label", "service", "s2", "team=payments"]);
      await api.kubectl(["apply", "-f", "-"], { input: service("s4", "192.0.2.77") });
      await eventually("the update of s4 arrives", () => {
        return reflector.store.get("default/s4")?.spec?.externalIPs?.[0] === "192.0.2.77";
      });
      expect(reflector.store.get("default/s2")).toBe(s2);
      expect(changes).toBe(beforeLabel + 1);

      const before = changes;
      await api.restartApiServer();
      await api.kubectl(["apply", "-f", "-"], { input: service("after", "192.0.2.50") });
      await eventually(
        "a Service created after the restart arrives",
        () => reflector.store.has("default/after"),
        40_000,
      );
      expect(changes).toBeGreaterThan(before);
      expect(events.some((event) => event.type === "retry" || event.type === "watch-ended")).toBe(
        true,
      );
    } finally {
      await reflector.stop();
    }
  }, 120_000);
});
