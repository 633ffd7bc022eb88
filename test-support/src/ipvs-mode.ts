/**
 * The rules kube-proxy's IPVS mode writes around a LoadBalancer IP, for a node namespace that
 * emulates an IPVS node (LB IPs bound locally, as on `kube-ipvs0`; the `ip_vs` module itself is
 * not available here). Written from kube-proxy v1.37's IPVS proxier, independently of the
 * controller's core, so that the controller is tested against kube-proxy's meaning, not its own:
 *
 * - the source-range firewall: filter INPUT and FORWARD jump to KUBE-PROXY-FIREWALL, which sends
 *   packets to an LB IP:port of KUBE-LOAD-BALANCER-FW to KUBE-SOURCE-RANGES-FIREWALL; that returns
 *   for sources in KUBE-LOAD-BALANCER-SOURCE-CIDR (LB IP, port, range) or
 *   KUBE-LOAD-BALANCER-SOURCE-IP (LB IP, port, LB IP: the node itself, when its IP is inside a
 *   range) and drops the rest;
 * - KUBE-IPVS-OUT-FILTER drops the node's own traffic to an LB IP whose ranges leave the node out
 *   (kube-proxy matches the IPVS connection with `-m ipvs --vaddr`, which needs `ip_vs`; here the
 *   destination address and port stand for it);
 * - nat POSTROUTING: KUBE-POSTROUTING masquerades a pod reaching its own endpoint
 *   (KUBE-LOOP-BACK: endpoint, port, endpoint) and packets carrying the masquerade mark 0x4000.
 *
 * kube-proxy's `ipset` sets are real ipsets here (Debian's `ipset`), named as kube-proxy names them
 * (IPv6 ones `KUBE-6-...`, cut to ipset's 31 characters).
 */
import type { CommandRunner } from "@ipvs-node-controller/backend";
import ipaddr from "ipaddr.js";

/** One LoadBalancer IP:port of a Service, with its `loadBalancerSourceRanges`. */
export interface IpvsLoadBalancer {
  readonly lbIP: string;
  readonly port: number;
  /** `spec.loadBalancerSourceRanges` as the Service lists them. */
  readonly sourceRanges?: readonly string[];
}

/** A local endpoint that IPVS may pick for a connection from itself: its loop-back entry. */
export interface IpvsLoopBack {
  /** Where IPVS sends the connection (the endpoint's address; the cluster IP when IPVS's
   * forwarding is emulated by routing the cluster IP to the endpoint). */
  readonly destination: string;
  readonly port: number;
  /** The endpoint's own address, the source of its hairpin connection. */
  readonly endpoint: string;
}

/** What {@link installIpvsModeRules} installs. */
export interface IpvsModeRules {
  readonly loadBalancers: readonly IpvsLoadBalancer[];
  readonly loopBacks?: readonly IpvsLoopBack[];
  /** kube-proxy's node IP per family (the Node's first InternalIP of the family). */
  readonly nodeIPs: { readonly ipv4: string; readonly ipv6: string };
}

const isIPv6 = (address: string) => address.includes(":");

/** The family of a range as kube-proxy's MapCIDRsByIPFamily reads it (trimmed); none if invalid. */
function cidrFamily(text: string): "ipv4" | "ipv6" | undefined {
  try {
    const [address] = ipaddr.parseCIDR(text.trim());
    return address.kind() === "ipv6" ? "ipv6" : "ipv4";
  } catch {
    return undefined;
  }
}

/** Whether an address lies inside a range of the same family (Go's IPNet.Contains). */
function contains(cidr: string, address: string): boolean {
  const range = ipaddr.parseCIDR(cidr.trim());
  const parsed = ipaddr.parse(address);
  return parsed.kind() === range[0].kind() && parsed.match(range);
}

/**
 * The ipset and iptables-restore input IPVS mode's proxier writes for these Services, one pair per
 * family. `ipsets` holds `ipset restore` lines.
 */
export function ipvsModeDocuments(rules: IpvsModeRules): {
  readonly ipsets: string;
  readonly iptables: { readonly ipv4: string; readonly ipv6: string };
} {
  const ipset: string[] = [];
  const families = [
    { family: "ipv4", prefix: "KUBE-", inet: "inet", nodeIP: rules.nodeIPs.ipv4 },
    { family: "ipv6", prefix: "KUBE-6-", inet: "inet6", nodeIP: rules.nodeIPs.ipv6 },
  ] as const;
  const documents = { ipv4: "", ipv6: "" };
  for (const { family, prefix, inet, nodeIP } of families) {
    const set = (name: string) => name.replace("KUBE-", prefix).slice(0, 31);
    for (const [name, type] of [
      ["KUBE-LOAD-BALANCER-FW", "hash:ip,port"],
      ["KUBE-LOAD-BALANCER-SOURCE-CIDR", "hash:ip,port,net"],
      ["KUBE-LOAD-BALANCER-SOURCE-IP", "hash:ip,port,ip"],
      ["KUBE-LOOP-BACK", "hash:ip,port,ip"],
    ] as const) {
      ipset.push(`create ${set(name)} ${type} family ${inet}`);
    }
    const noNodeAccess: IpvsLoadBalancer[] = [];
    for (const lb of rules.loadBalancers) {
      if ((family === "ipv6") !== isIPv6(lb.lbIP)) continue;
      // serviceport.go: ranges of this family; a /0 among them means "allow any".
      const ranges = (lb.sourceRanges ?? [])
        .map((range) => range.trim())
        .filter((range) => cidrFamily(range) === family);
      if (ranges.length === 0 || ranges.some((range) => range.endsWith("/0"))) continue;
      ipset.push(`add ${set("KUBE-LOAD-BALANCER-FW")} ${lb.lbIP},tcp:${lb.port}`);
      for (const range of ranges) {
        ipset.push(
          `add ${set("KUBE-LOAD-BALANCER-SOURCE-CIDR")} ${lb.lbIP},tcp:${lb.port},${range}`,
        );
      }
      if (ranges.some((range) => contains(range, nodeIP))) {
        ipset.push(
          `add ${set("KUBE-LOAD-BALANCER-SOURCE-IP")} ${lb.lbIP},tcp:${lb.port},${lb.lbIP}`,
        );
      } else {
        noNodeAccess.push(lb);
      }
    }
    for (const loop of rules.loopBacks ?? []) {
      if ((family === "ipv6") !== isIPv6(loop.destination)) continue;
      ipset.push(
        `add ${set("KUBE-LOOP-BACK")} ${loop.destination},tcp:${loop.port},${loop.endpoint}`,
      );
    }
    const host = family === "ipv4" ? "/32" : "/128";
    documents[family] = [
      "*filter",
      ":KUBE-PROXY-FIREWALL - [0:0]",
      ":KUBE-SOURCE-RANGES-FIREWALL - [0:0]",
      ":KUBE-IPVS-OUT-FILTER - [0:0]",
      '-A INPUT -m comment --comment "kube-proxy firewall rules" -j KUBE-PROXY-FIREWALL',
      '-A FORWARD -m comment --comment "kube-proxy firewall rules" -j KUBE-PROXY-FIREWALL',
      '-A OUTPUT -m comment --comment "kubernetes ipvs access filter" -j KUBE-IPVS-OUT-FILTER',
      `-A KUBE-PROXY-FIREWALL -m set --match-set ${set("KUBE-LOAD-BALANCER-FW")} dst,dst -j KUBE-SOURCE-RANGES-FIREWALL`,
      `-A KUBE-SOURCE-RANGES-FIREWALL -m set --match-set ${set("KUBE-LOAD-BALANCER-SOURCE-CIDR")} dst,dst,src -j RETURN`,
      `-A KUBE-SOURCE-RANGES-FIREWALL -m set --match-set ${set("KUBE-LOAD-BALANCER-SOURCE-IP")} dst,dst,src -j RETURN`,
      "-A KUBE-SOURCE-RANGES-FIREWALL -j DROP",
      ...noNodeAccess.map(
        (lb) =>
          `-A KUBE-IPVS-OUT-FILTER -s ${lb.lbIP}${host} -d ${lb.lbIP}${host} -p tcp -m tcp --dport ${lb.port} -j DROP`,
      ),
      "COMMIT",
      "*nat",
      ":KUBE-POSTROUTING - [0:0]",
      '-A POSTROUTING -m comment --comment "kubernetes postrouting rules" -j KUBE-POSTROUTING',
      `-A KUBE-POSTROUTING -m set --match-set ${set("KUBE-LOOP-BACK")} dst,dst,src -j MASQUERADE`,
      "-A KUBE-POSTROUTING -m mark ! --mark 0x4000/0x4000 -j RETURN",
      "-A KUBE-POSTROUTING -j MARK --xor-mark 0x4000",
      "-A KUBE-POSTROUTING -j MASQUERADE",
      "COMMIT",
      "",
    ].join("\n");
  }
  return { ipsets: `${ipset.join("\n")}\n`, iptables: documents };
}

/** Installs IPVS mode's rules into the namespace `runner` runs in. Throws on any refusal. */
export async function installIpvsModeRules(
  runner: CommandRunner,
  rules: IpvsModeRules,
): Promise<void> {
  const { ipsets, iptables } = ipvsModeDocuments(rules);
  const steps: [string, string[], string][] = [
    ["ipset", ["restore"], ipsets],
    ["iptables-restore", ["--noflush"], iptables.ipv4],
    ["ip6tables-restore", ["--noflush"], iptables.ipv6],
  ];
  for (const [file, args, input] of steps) {
    const result = await runner(file, args, { input });
    if (result.exitCode !== 0) {
      throw new Error(`${file} ${args.join(" ")} failed: ${result.stderr.trim()}\n${input}`);
    }
  }
}
