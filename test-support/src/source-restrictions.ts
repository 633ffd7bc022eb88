/**
 * The source-restriction scenario both backends are proven on with real traffic: LoadBalancer IPs
 * whose mappings admit every source, only the node's pods, only the node itself (its LB IP as
 * source, as kube-proxy admits it when a node address is inside the ranges), or nobody on this
 * node. Each LB IP is bound on the node's `lo` with nothing listening, and its cluster IP answers:
 * a connection is answered exactly when it was translated.
 */
import type { Backend } from "@ipvs-node-controller/backend";
import {
  type IpFamily,
  type Mapping,
  type Ruleset,
  updateBetween,
} from "@ipvs-node-controller/core";
import { ADDRESS_PLAN, type Host, type Topology } from "./netns.js";

/** One restricted (or open) LoadBalancer IP of the scenario. */
export interface RestrictionCase {
  readonly name: string;
  readonly family: IpFamily;
  readonly lb: string;
  readonly cluster: string;
  /** Undefined: unrestricted. */
  readonly allowedSources?: readonly string[];
  /** Which hosts are answered once the mapping is applied. */
  readonly answered: Readonly<Record<Host, boolean>>;
}

/** The port every case uses. */
export const RESTRICTION_PORT = 80;

const ONLY = (...hosts: Host[]): Record<Host, boolean> => ({
  node: hosts.includes("node"),
  pod: hosts.includes("pod"),
  remote: hosts.includes("remote"),
});

/** The cases, IPv4 and IPv6. Traffic from outside the node is never translated. */
export const RESTRICTION_CASES: readonly RestrictionCase[] = [
  {
    name: "open",
    family: "ipv4",
    lb: "203.0.113.40",
    cluster: "10.96.0.40",
    answered: ONLY("pod", "node"),
  },
  {
    name: "pods",
    family: "ipv4",
    lb: "203.0.113.41",
    cluster: "10.96.0.41",
    allowedSources: [ADDRESS_PLAN.podCIDR.ipv4],
    answered: ONLY("pod"),
  },
  {
    // The remote host is inside the range, yet stays untranslated: it is not on this node.
    name: "node",
    family: "ipv4",
    lb: "203.0.113.42",
    cluster: "10.96.0.42",
    allowedSources: ["198.51.100.0/24", "203.0.113.42/32"],
    answered: ONLY("node"),
  },
  {
    name: "nobody",
    family: "ipv4",
    lb: "203.0.113.43",
    cluster: "10.96.0.43",
    allowedSources: ["192.0.2.0/24"],
    answered: ONLY(),
  },
  {
    name: "pods",
    family: "ipv6",
    lb: "2001:db8:ffff::41",
    cluster: "fd00:10:96::41",
    allowedSources: [ADDRESS_PLAN.podCIDR.ipv6],
    answered: ONLY("pod"),
  },
  {
    name: "node",
    family: "ipv6",
    lb: "2001:db8:ffff::42",
    cluster: "fd00:10:96::42",
    allowedSources: ["2001:db8:100::/64", "2001:db8:ffff::42/128"],
    answered: ONLY("node"),
  },
];

/**
 * The mapping of a case, owned by `default/<name>`; `override` replaces its restriction
 * (`{}`: unrestricted).
 */
export function restrictionMapping(
  restriction: RestrictionCase,
  override?: { readonly allowedSources?: readonly string[] },
): Mapping {
  const allowedSources =
    override === undefined ? restriction.allowedSources : override.allowedSources;
  return {
    family: restriction.family,
    externalIP: restriction.lb,
    protocol: "tcp",
    port: RESTRICTION_PORT,
    clusterIP: restriction.cluster,
    service: { namespace: "default", name: restriction.name },
    ...(allowedSources === undefined ? {} : { allowedSources }),
  };
}

/** Binds every case's LB and cluster IP on the node and starts a listener on each cluster IP. */
export async function deployRestrictionCases(topology: Topology): Promise<void> {
  await topology.addNodeAddresses(RESTRICTION_CASES.flatMap((c) => [c.lb, c.cluster]));
  await topology.listen(
    RESTRICTION_CASES.map((c) => ({
      ip: c.cluster,
      port: RESTRICTION_PORT,
      protocol: "tcp" as const,
      reply: `${c.name}/${c.family}`,
    })),
  );
}

/** Which hosts reach the case's LB IP right now: a reply from its cluster IP, or nothing. */
export async function reachedHosts(
  topology: Topology,
  restriction: RestrictionCase,
): Promise<Record<Host, boolean>> {
  const reached: Record<Host, boolean> = { node: false, pod: false, remote: false };
  for (const host of ["pod", "node", "remote"] as const) {
    const result = await topology.connect(host, restriction.lb, RESTRICTION_PORT, "tcp", {
      timeoutMs: 1000,
    });
    reached[host] = result.ok && result.reply === `${restriction.name}/${restriction.family}`;
  }
  return reached;
}

/** One step of {@link walkRestrictionSteps}: every case's mapping, and who must reach "pods". */
export interface RestrictionStep {
  readonly name: string;
  readonly mappings: readonly Mapping[];
  readonly answered: Readonly<Record<Host, boolean>>;
}

/**
 * The IPv4 "pods" case narrowed so that the pod (10.244.1.2, outside the upper half of its CIDR)
 * is no longer admitted, then opened to every source, then restricted as before; the other cases
 * stay as they are.
 */
export function restrictionSteps(): RestrictionStep[] {
  const pods = RESTRICTION_CASES.find((c) => c.name === "pods" && c.family === "ipv4");
  if (pods === undefined) throw new Error("no IPv4 pods case");
  const all = RESTRICTION_CASES.map((c) => restrictionMapping(c));
  const replace = (mapping: Mapping) => all.map((m) => (m.externalIP === pods.lb ? mapping : m));
  return [
    {
      name: "narrowed",
      mappings: replace(restrictionMapping(pods, { allowedSources: ["10.244.1.128/25"] })),
      answered: { pod: false, node: false, remote: false },
    },
    {
      name: "opened",
      mappings: replace(restrictionMapping(pods, {})),
      answered: { pod: true, node: true, remote: false },
    },
    { name: "restricted again", mappings: all, answered: pods.answered },
  ];
}

/**
 * Takes `backend`, which holds every case as `RESTRICTION_CASES` has it, through
 * {@link restrictionSteps}, each as an update of the previous step, and says for each step how it
 * was applied, whether a verify agreed, and who reached the "pods" LB IP.
 */
export async function walkRestrictionSteps(
  topology: Topology,
  backend: Backend,
  toRuleset: (mappings: readonly Mapping[]) => Ruleset,
): Promise<{ name: string; mode: string; verified: boolean; reached: Record<Host, boolean> }[]> {
  const pods = RESTRICTION_CASES.find(
    (c) => c.name === "pods" && c.family === "ipv4",
  ) as RestrictionCase;
  let previous = toRuleset(RESTRICTION_CASES.map((c) => restrictionMapping(c)));
  const walked = [];
  for (const step of restrictionSteps()) {
    const next = toRuleset(step.mappings);
    const { mode } = await backend.applyChanges(updateBetween(previous, next));
    walked.push({
      name: step.name,
      mode,
      verified: await backend.verify(next),
      reached: await reachedHosts(topology, pods),
    });
    previous = next;
  }
  return walked;
}
