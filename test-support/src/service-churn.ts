/**
 * Many LoadBalancer Services on a test API server, a stream of changes to them, and the check that
 * the kernel holds exactly what they ask for: the pieces of the churn soak (the benchmark script
 * and its short CI version).
 *
 * The expected mappings are derived here from the Services as the API server returns them, by a few
 * lines independent of the core, and compared with the elements of the nft map read back from the
 * kernel.
 *
 * @example
 * ```ts
 * const client = kubeClient(api);
 * const pool = new AddressPool();
 * const names = await createLoadBalancerServices(client, { count: 1000, pool });
 * const churn = new ServiceChurn(client, names, { seed: 1, pool });
 * await runAtRate(600, 20, () => churn.step());
 * const diff = compareMappings(expectedMappings(await listServices(client)), await kernelMappings(runner));
 * ```
 */

import { readFileSync } from "node:fs";
import { Agent, request } from "node:https";
import type { CommandRunner } from "@ipvs-node-controller/backend";
import { seededRandom } from "./seeded-random.js";

/** What a {@link KubeClient} needs of a test API server. */
export interface ApiEndpoint {
  readonly serverUrl: string;
  readonly caFile: string;
  readonly adminToken: string;
}

/** A minimal JSON client of the Kubernetes API, over one keep-alive connection pool. */
export interface KubeClient {
  /** Sends one request; rejects with the status and the server's message on anything but 2xx. */
  request<T = unknown>(
    method: "GET" | "POST" | "PATCH" | "DELETE",
    path: string,
    body?: unknown,
    contentType?: string,
  ): Promise<T>;
  /** Closes the pooled connections. */
  close(): void;
}

/** An error answer of the API server. */
export class KubeRequestError extends Error {
  constructor(
    readonly status: number,
    message: string,
  ) {
    super(message);
  }
}

/** A client authenticated as the test API server's admin. */
export function kubeClient(api: ApiEndpoint, options: { maxSockets?: number } = {}): KubeClient {
  const ca = readFileSync(api.caFile);
  const agent = new Agent({ keepAlive: true, maxSockets: options.maxSockets ?? 16, ca });
  return {
    request<T>(
      method: string,
      path: string,
      body?: unknown,
      contentType = "application/json",
    ): Promise<T> {
      const payload = body === undefined ? undefined : JSON.stringify(body);
      return new Promise<T>((resolve, reject) => {
        const req = request(
          `${api.serverUrl}${path}`,
          {
            method,
            agent,
            headers: {
              authorization: `Bearer ${api.adminToken}`,
              accept: "application/json",
              ...(payload === undefined
                ? {}
                : { "content-type": contentType, "content-length": Buffer.byteLength(payload) }),
            },
          },
          (res) => {
            const chunks: Buffer[] = [];
            res.on("data", (chunk: Buffer) => chunks.push(chunk));
            res.on("end", () => {
              const text = Buffer.concat(chunks).toString("utf8");
              const status = res.statusCode ?? 0;
              if (status < 200 || status > 299) {
                let message = text;
                try {
                  message = (JSON.parse(text) as { message?: string }).message ?? text;
                } catch {
                  // Not a Status object.
                }
                reject(new KubeRequestError(status, `${method} ${path}: ${status} ${message}`));
                return;
              }
              resolve((text === "" ? undefined : JSON.parse(text)) as T);
            });
            res.on("error", reject);
          },
        );
        req.on("error", reject);
        req.end(payload);
      });
    },
    close: () => agent.destroy(),
  };
}

/** One Service port as the churn writes it. */
interface PortSpec {
  readonly name: string;
  readonly port: number;
  readonly protocol: "TCP" | "UDP";
}

/** The port sets Services switch between. */
const PORT_SETS: readonly (readonly PortSpec[])[] = [
  [{ name: "http", port: 80, protocol: "TCP" }],
  [
    { name: "http", port: 80, protocol: "TCP" },
    { name: "https", port: 443, protocol: "TCP" },
  ],
  [
    { name: "http", port: 80, protocol: "TCP" },
    { name: "https", port: 443, protocol: "TCP" },
    { name: "quic", port: 443, protocol: "UDP" },
  ],
  [
    { name: "alt", port: 8080, protocol: "TCP" },
    { name: "dns", port: 53, protocol: "UDP" },
  ],
];

/** LB IPs from 172.16.0.0/12, each handed out once, so that no two Services ever conflict. */
export class AddressPool {
  private next = 0;
  take(): string {
    const i = this.next++;
    if (i >= 1 << 20) throw new Error("the 172.16.0.0/12 pool is exhausted");
    return `172.${16 + (i >> 16)}.${(i >> 8) & 255}.${i & 255}`;
  }
}

function serviceBody(namespace: string, name: string, ports: readonly PortSpec[]) {
  return {
    apiVersion: "v1",
    kind: "Service",
    metadata: { namespace, name, labels: { app: name, tier: "churn" } },
    spec: {
      type: "LoadBalancer",
      // Local policy allocates a health-check node port per Service: widen the API server's
      // --service-node-port-range for thousands of them.
      externalTrafficPolicy: "Local",
      allocateLoadBalancerNodePorts: false,
      selector: { app: name },
      ports: ports.map((p) => ({ ...p, targetPort: 8080 })),
    },
  };
}

const servicePath = (namespace: string, name?: string) =>
  `/api/v1/namespaces/${namespace}/services${name === undefined ? "" : `/${name}`}`;

/** Runs `work(i)` for i in [0, total) with at most `concurrency` at once. */
export async function inParallel(
  total: number,
  concurrency: number,
  work: (index: number) => Promise<void>,
): Promise<void> {
  let next = 0;
  await Promise.all(
    Array.from({ length: Math.min(concurrency, total) }, async () => {
      while (next < total) await work(next++);
    }),
  );
}

/** The kinds of change the churn makes, and how often (weights sum to 1). */
export const CHURN_MIX = {
  /** The load balancer moves the Service to a new IP (status write). */
  move: 0.45,
  /** The Service's ports change (spec write). */
  ports: 0.2,
  /** A label changes: a write that must not cause a sync. */
  label: 0.15,
  /** The Service is deleted. */
  delete: 0.1,
  /** A new Service is created and given an IP (two writes). */
  create: 0.1,
} as const;

export type ChurnKind = keyof typeof CHURN_MIX;

/**
 * Changes the Services one write at a time. Services being changed are never picked by another
 * change, so concurrent steps never race on one object; the API server's answer is the truth the
 * kernel is compared with at the end, so a rejected write is counted, not retried.
 */
export class ServiceChurn {
  readonly counts: Record<ChurnKind | "failed", number> = {
    move: 0,
    ports: 0,
    label: 0,
    delete: 0,
    create: 0,
    failed: 0,
  };
  private readonly live: string[];
  private readonly busy = new Set<string>();
  private readonly random: () => number;
  private created = 0;
  private labels = 0;

  constructor(
    private readonly client: KubeClient,
    names: readonly string[],
    private readonly options: {
      readonly namespace?: string;
      readonly seed?: number;
      readonly pool: AddressPool;
    },
  ) {
    this.live = [...names];
    this.random = seededRandom(options.seed ?? 1);
  }

  private get namespace(): string {
    return this.options.namespace ?? "default";
  }

  /** How many Services exist now (as far as the churn knows). */
  get size(): number {
    return this.live.length;
  }

  private pick(): string | undefined {
    for (let attempt = 0; attempt < 20; attempt++) {
      const name = this.live[Math.floor(this.random() * this.live.length)];
      if (name !== undefined && !this.busy.has(name)) return name;
    }
    return undefined;
  }

  private kind(): ChurnKind {
    let roll = this.random();
    for (const [kind, weight] of Object.entries(CHURN_MIX) as [ChurnKind, number][]) {
      if (roll < weight) return kind;
      roll -= weight;
    }
    return "move";
  }

  /** Makes one change; resolves when the API server has answered. */
  async step(): Promise<ChurnKind> {
    const kind = this.kind();
    const name = kind === "create" ? `churn-${this.created++}` : this.pick();
    if (name === undefined) return kind;
    this.busy.add(name);
    try {
      await this.apply(kind, name);
      this.counts[kind] += 1;
    } catch {
      this.counts.failed += 1;
    } finally {
      this.busy.delete(name);
    }
    return kind;
  }

  private async apply(kind: ChurnKind, name: string): Promise<void> {
    const { client, namespace } = this;
    const path = servicePath(namespace, name);
    switch (kind) {
      case "move":
        await setIngress(client, namespace, name, this.options.pool.take());
        break;
      case "ports": {
        const ports = PORT_SETS[Math.floor(this.random() * PORT_SETS.length)] ?? [];
        await client.request(
          "PATCH",
          path,
          [
            {
              op: "replace",
              path: "/spec/ports",
              value: ports.map((p) => ({ ...p, targetPort: 8080 })),
            },
          ],
          "application/json-patch+json",
        );
        break;
      }
      case "label":
        await client.request(
          "PATCH",
          path,
          { metadata: { labels: { churn: String(this.labels++) } } },
          "application/merge-patch+json",
        );
        break;
      case "delete": {
        const index = this.live.indexOf(name);
        if (index >= 0) this.live.splice(index, 1);
        await client.request("DELETE", path);
        break;
      }
      case "create":
        await client.request(
          "POST",
          servicePath(namespace),
          serviceBody(namespace, name, PORT_SETS[2] ?? []),
        );
        this.live.push(name);
        await setIngress(client, namespace, name, this.options.pool.take());
        break;
    }
  }
}

/** Sets the LB status the way MetalLB does (one write). */
export async function setIngress(
  client: KubeClient,
  namespace: string,
  name: string,
  ip: string,
): Promise<void> {
  await client.request(
    "PATCH",
    `${servicePath(namespace, name)}/status`,
    { status: { loadBalancer: { ingress: [{ ip, ipMode: "VIP" }] } } },
    "application/merge-patch+json",
  );
}

/**
 * Creates `count` LoadBalancer Services (3 ports each) named `<prefix>-<i>` and gives each an LB
 * IP from `pool`. Returns their names.
 */
export async function createLoadBalancerServices(
  client: KubeClient,
  options: {
    readonly count: number;
    readonly pool: AddressPool;
    readonly namespace?: string;
    readonly prefix?: string;
    readonly concurrency?: number;
  },
): Promise<string[]> {
  const namespace = options.namespace ?? "default";
  const names = Array.from({ length: options.count }, (_, i) => `${options.prefix ?? "svc"}-${i}`);
  await inParallel(names.length, options.concurrency ?? 16, async (i) => {
    const name = names[i] as string;
    await client.request(
      "POST",
      servicePath(namespace),
      serviceBody(namespace, name, PORT_SETS[2] ?? []),
    );
    await setIngress(client, namespace, name, options.pool.take());
  });
  return names;
}

/**
 * Runs `total` steps at `perSecond`, each started on schedule (step i at i / perSecond seconds)
 * unless `concurrency` steps are still waiting for the API server, in which case it starts as soon
 * as one finishes. The work is fixed; on a slow machine it only takes longer.
 */
export async function runAtRate(
  total: number,
  perSecond: number,
  step: (index: number) => Promise<unknown>,
  options: { readonly concurrency?: number; readonly signal?: AbortSignal } = {},
): Promise<{ elapsedMs: number; achievedPerSecond: number }> {
  const concurrency = options.concurrency ?? 32;
  const started = performance.now();
  const running = new Set<Promise<unknown>>();
  let issued = 0;
  for (; issued < total && !options.signal?.aborted; issued++) {
    const due = started + (issued * 1000) / perSecond;
    const wait = due - performance.now();
    if (wait > 0) await new Promise((resolve) => setTimeout(resolve, wait));
    while (running.size >= concurrency) await Promise.race(running);
    const promise: Promise<unknown> = step(issued).finally(() => running.delete(promise));
    running.add(promise);
  }
  await Promise.all(running);
  const elapsedMs = performance.now() - started;
  return { elapsedMs, achievedPerSecond: issued / (elapsedMs / 1000) };
}

/** Every Service of the cluster as the API server returns it (`items` of the list). */
export async function listServices(client: KubeClient): Promise<unknown[]> {
  const list = await client.request<{ items: unknown[] }>("GET", "/api/v1/services");
  return list.items;
}

/** `ip proto port` → cluster IP. */
export type MappingTable = Map<string, string>;

interface LooseService {
  spec?: {
    type?: string;
    clusterIP?: string;
    externalIPs?: string[];
    ports?: { port?: number; protocol?: string }[];
  };
  status?: { loadBalancer?: { ingress?: { ip?: string; ipMode?: string }[] } };
}

/**
 * The IPv4 mappings that well-formed, conflict-free Services ask for: every LB ingress IP (not
 * `ipMode: Proxy`) and external IP, times every port, to the cluster IP. Deliberately simple and
 * independent of the core, so that the two cannot share a mistake.
 */
export function expectedMappings(services: readonly unknown[]): MappingTable {
  const table: MappingTable = new Map();
  for (const service of services as LooseService[]) {
    const clusterIP = service.spec?.clusterIP;
    if (clusterIP === undefined || clusterIP === "None" || clusterIP.includes(":")) continue;
    const ips = [
      ...(service.spec?.type === "LoadBalancer"
        ? (service.status?.loadBalancer?.ingress ?? [])
            .filter((entry) => entry.ipMode !== "Proxy")
            .map((entry) => entry.ip)
        : []),
      ...(service.spec?.externalIPs ?? []),
    ].filter((ip): ip is string => ip !== undefined && !ip.includes(":"));
    for (const ip of ips) {
      for (const port of service.spec?.ports ?? []) {
        table.set(`${ip} ${(port.protocol ?? "TCP").toLowerCase()} ${port.port}`, clusterIP);
      }
    }
  }
  return table;
}

type NftElement =
  | [{ concat: [string, string, number] }, string]
  | [{ elem: { val: { concat: [string, string, number] } } }, string];

/** The elements of our IPv4 map in the kernel (`nft -j list map`); empty when there is none. */
export async function kernelMappings(
  runner: CommandRunner,
  table = "ipvs-node-controller",
): Promise<MappingTable> {
  const listed = await runner("nft", ["-j", "list", "map", "inet", table, "mappings-ipv4"]);
  const found: MappingTable = new Map();
  if (listed.exitCode !== 0) {
    if (/No such file or directory/.test(listed.stderr)) return found;
    throw new Error(`nft list map: ${listed.stderr.trim()}`);
  }
  const document = JSON.parse(listed.stdout) as {
    nftables: { map?: { elem?: NftElement[] } }[];
  };
  for (const item of document.nftables) {
    for (const [key, clusterIP] of item.map?.elem ?? []) {
      const [ip, protocol, port] = "elem" in key ? key.elem.val.concat : key.concat;
      found.set(`${ip} ${protocol} ${port}`, clusterIP);
    }
  }
  return found;
}

/** What differs between two tables, by key. */
export interface MappingDiff {
  readonly missing: readonly string[];
  readonly extra: readonly string[];
  readonly wrong: readonly string[];
}

/** Compares expected with actual; all three lists empty means equal. */
export function compareMappings(expected: MappingTable, actual: MappingTable): MappingDiff {
  const missing: string[] = [];
  const wrong: string[] = [];
  for (const [key, clusterIP] of expected) {
    const found = actual.get(key);
    if (found === undefined) missing.push(key);
    else if (found !== clusterIP) wrong.push(`${key}: ${found} instead of ${clusterIP}`);
  }
  const extra = [...actual.keys()].filter((key) => !expected.has(key));
  return { missing, extra, wrong };
}

/** The number of differences in a {@link MappingDiff}. */
export function differenceCount(diff: MappingDiff): number {
  return diff.missing.length + diff.extra.length + diff.wrong.length;
}
