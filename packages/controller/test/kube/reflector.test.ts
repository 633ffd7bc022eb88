/**
 * The reflector against a real kube-apiserver, one behaviour per test: paged lists, watch events,
 * trimming, a relist after 410 Gone, and an API-server restart. No HTTP mocks. Each test watches a
 * namespace of its own.
 */
import { type ServiceInput, trimService } from "@ipvs-node-controller/core";
import {
  envtestTestsEnabled,
  eventually,
  startTestApiServer,
  type TestApiServer,
} from "@ipvs-node-controller/test-support";
import { KubeConfig } from "@kubernetes/client-node";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { ApiClient } from "../../src/kube/api-client.js";
import { listCall } from "../../src/kube/cluster.js";
import type { ListPage } from "../../src/kube/list.js";
import { Reflector, type ReflectorEvent } from "../../src/kube/reflector.js";

const enabled = (await envtestTestsEnabled("reflector tests")) !== undefined;

/** What the consumer was handed, in order: `key=ip` for an object, `key=deleted` for a delete. */
type Handed = string[];

describe.skipIf(!enabled)("Reflector on a real API server", () => {
  let api: TestApiServer;
  let client: ApiClient;
  const running: Reflector<ServiceInput>[] = [];
  let namespaces = 0;

  beforeAll(async () => {
    // Frequent compaction, with watches served straight from etcd, makes an old resource version
    // really expire (410 Gone), as it does on a busy cluster after a long disconnection.
    api = await startTestApiServer({
      extraApiServerArgs: ["--etcd-compaction-interval=1s", "--watch-cache=false"],
    });
    const kubeConfig = new KubeConfig();
    kubeConfig.loadFromFile(api.kubeconfigPath);
    client = new ApiClient(kubeConfig);
  }, 180_000);
  afterEach(async () => {
    await Promise.all(running.splice(0).map((reflector) => reflector.stop()));
  });
  afterAll(async () => {
    await api?.stop();
  }, 60_000);

  const serviceYaml = (namespace: string, name: string, ip: string) =>
    JSON.stringify({
      apiVersion: "v1",
      kind: "Service",
      metadata: { namespace, name, annotations: { big: "x".repeat(2000) }, labels: { a: "b" } },
      spec: { type: "ClusterIP", externalIPs: [ip], ports: [{ port: 80 }] },
    });
  const apply = (namespace: string, name: string, ip: string) =>
    api.kubectl(["apply", "-f", "-"], { input: serviceYaml(namespace, name, ip) });

  async function freshNamespace(services: number): Promise<string> {
    const namespace = `reflector-${++namespaces}`;
    await api.kubectl(["create", "namespace", namespace]);
    for (let i = 0; i < services; i++) await apply(namespace, `s${i}`, `192.0.2.${i + 1}`);
    return namespace;
  }

  /** The Services of `namespace`, two per page. */
  const listServices = (namespace: string) =>
    listCall(client, `/api/v1/namespaces/${namespace}/services`, { limit: 2 });

  function start(
    namespace: string,
    overrides: { list?: (token: string | undefined) => Promise<ListPage> } = {},
  ) {
    const handed: Handed = [];
    const objects = new Map<string, ServiceInput>();
    const events: ReflectorEvent[] = [];
    const reflector = new Reflector<ServiceInput>({
      name: "services",
      list: overrides.list ?? listServices(namespace),
      watchPath: `/api/v1/namespaces/${namespace}/services`,
      watch: client,
      trim: trimService,
      onChange: (key, service) => {
        handed.push(`${key}=${service?.spec?.externalIPs?.[0] ?? "deleted"}`);
        if (service === undefined) objects.delete(key);
        else objects.set(key, service);
      },
      onEvent: (event) => events.push(event),
      backoff: { initialMs: 100, maxMs: 1000 },
    });
    running.push(reflector);
    reflector.start();
    return { reflector, handed, objects, events };
  }

  it("lists page by page and hands each object over once before it is synced", async () => {
    const namespace = await freshNamespace(5);
    let pages = 0;
    const { reflector, handed, objects } = start(namespace, {
      list: async (token) => {
        pages += 1;
        expect(reflector.hasSynced).toBe(false);
        return listServices(namespace)(token);
      },
    });
    await eventually("synced", () => reflector.hasSynced);
    expect(pages).toBeGreaterThanOrEqual(3); // 5 Services, 2 per page
    expect(handed.sort()).toEqual(
      [0, 1, 2, 3, 4].map((i) => `${namespace}/s${i}=192.0.2.${i + 1}`),
    );
    expect([...objects.keys()].sort()).toEqual([0, 1, 2, 3, 4].map((i) => `${namespace}/s${i}`));
  });

  it("hands over what the watch reports: an update, a creation and a deletion, in order", async () => {
    const namespace = await freshNamespace(2);
    const { reflector, handed, objects } = start(namespace);
    await eventually("synced", () => reflector.hasSynced);
    handed.length = 0;
    await apply(namespace, "s0", "192.0.2.99");
    await apply(namespace, "new", "192.0.2.50");
    await api.kubectl(["delete", "service", "-n", namespace, "s1"]);
    await eventually("three events", () => handed.length === 3);
    expect(handed).toEqual([
      `${namespace}/s0=192.0.2.99`,
      `${namespace}/new=192.0.2.50`,
      `${namespace}/s1=deleted`,
    ]);
    expect(objects.has(`${namespace}/s1`)).toBe(false);
  });

  it("hands over only the fields the core reads", async () => {
    const namespace = await freshNamespace(1);
    const { reflector, objects } = start(namespace);
    await eventually("synced", () => reflector.hasSynced);
    const service = objects.get(`${namespace}/s0`) as ServiceInput & Record<string, unknown>;
    expect(service.spec?.externalIPs).toEqual(["192.0.2.1"]);
    expect(service.metadata?.annotations).toBeUndefined();
    expect(Object.keys(service.metadata ?? {}).sort()).toEqual([
      "creationTimestamp",
      "name",
      "namespace",
    ]);
    const read = [
      "clusterIP",
      "clusterIPs",
      "externalIPs",
      "externalTrafficPolicy",
      "ports",
      "type",
    ];
    expect(Object.keys(service.spec ?? {}).filter((key) => !read.includes(key))).toEqual([]);
    expect(service.spec?.ports).toEqual([{ port: 80, protocol: "TCP" }]);
  });

  it("relists after 410 Gone and reports what was deleted meanwhile", async () => {
    const namespace = await freshNamespace(3);
    let lists = 0;
    const { handed, events, objects } = start(namespace, {
      list: async (token) => {
        const page = await listServices(namespace)(token);
        // The first complete list pretends to be ancient, so the watch that follows is refused
        // with 410 Gone ("too old resource version"), as after a long disconnection; by then
        // one Service is gone.
        if (page.metadata?.continue === undefined && ++lists === 1) {
          await api.kubectl(["delete", "service", "-n", namespace, "s2"]);
          await new Promise((resolve) => setTimeout(resolve, 3000)); // let a compaction pass
          return { ...page, metadata: { ...page.metadata, resourceVersion: "1" } };
        }
        return page;
      },
    });
    await eventually("the expired version is noticed", () =>
      events.some((event) => event.type === "expired"),
    );
    await eventually("the relist reports the deletion", () =>
      handed.includes(`${namespace}/s2=deleted`),
    );
    expect(lists).toBe(2);
    expect([...objects.keys()].sort()).toEqual([`${namespace}/s0`, `${namespace}/s1`]);
  }, 60_000);

  it("follows changes made after an API-server restart", async () => {
    const namespace = await freshNamespace(1);
    const { reflector, handed, events } = start(namespace);
    await eventually("synced", () => reflector.hasSynced);
    await api.restartApiServer();
    await apply(namespace, "after", "192.0.2.77");
    await eventually(
      "the Service created after the restart arrives",
      () => handed.includes(`${namespace}/after=192.0.2.77`),
      40_000,
    );
    expect(events.some((event) => event.type === "retry" || event.type === "watch-ended")).toBe(
      true,
    );
  }, 90_000);
});
