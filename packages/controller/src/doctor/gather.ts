/**
 * `doctor`'s facts: Services and the Node from files or one list of the API (no watch), the
 * node's addresses, both backends' rules read back, tool versions and, if asked, TCP probes. Only
 * reads: nothing here changes the kernel or the cluster.
 */
import { release } from "node:os";
import { type CommandRunner, ToolNotStartedError } from "@ipvs-node-controller/backend";
import { createIptablesBackend } from "@ipvs-node-controller/backend-iptables";
import { createNftBackend } from "@ipvs-node-controller/backend-nft";
import {
  type CoreConfig,
  computeRuleset,
  type LiveRules,
  type NodeInput,
  type RulesetSettings,
  type ServiceInput,
  settingsOf,
} from "@ipvs-node-controller/core";
import { errorLine } from "../error-line.js";
import { readNode, readServicesFile } from "../input-files.js";
import { type ClusterOptions, clusterFromKubeconfig, listCluster } from "../kube/cluster.js";
import { inspectNodeNetwork } from "../node-network.js";
import { type BackendFlags, type BackendName, otherBackendOf } from "../options.js";
import { buildDoctorReport, type DoctorFacts, type LiveRulesFact, probeKey } from "./evaluate.js";
import { mapLimited, probeTcp } from "./probe.js";
import type { DoctorReport, DoctorSource, ProbeOutcome } from "./schema.js";

/** Where `doctor` reads Services and the Node from. */
export type DoctorInput =
  | {
      readonly kind: "files";
      /** Services as `kubectl get svc -A -o yaml|json` prints them. */
      readonly services: string;
      /** A Node object, for its pod CIDRs. */
      readonly node?: string;
      /** Names the node in the report when the Node file does not. */
      readonly nodeName?: string;
    }
  | ({ readonly kind: "api" } & ClusterOptions);

/** Everything `doctor` needs, already validated. */
export interface DoctorOptions {
  readonly input: DoctorInput;
  /** Resolved core configuration (`coreConfigFromFlags`). */
  readonly config: CoreConfig;
  readonly backend: BackendName;
  readonly backendFlags: Omit<BackendFlags, "backend">;
  /** When set, every TCP external IP:port is probed from this host with this time limit. */
  readonly probeTimeoutMs?: number;
  /** Starts the kernel tools (`createRunner`). */
  readonly runner: CommandRunner;
}

/** How many probes run at once: enough to finish quickly, few enough not to flood a node. */
const PROBE_CONCURRENCY = 16;

interface Inputs {
  readonly services: readonly ServiceInput[];
  readonly node?: NodeInput;
  readonly nodeName?: string;
  readonly source: DoctorSource;
}

async function readInputs(input: DoctorInput): Promise<Inputs> {
  if (input.kind === "files") {
    const services = await readServicesFile(input.services);
    const node = input.node === undefined ? undefined : await readNode(input.node);
    const named = (node as { metadata?: { name?: unknown } } | undefined)?.metadata?.name;
    const nodeName = typeof named === "string" ? named : input.nodeName;
    return {
      services,
      node,
      ...(nodeName === undefined ? {} : { nodeName }),
      source: {
        kind: "files",
        services: input.services,
        ...(input.node === undefined ? {} : { node: input.node }),
      },
    };
  }
  const cluster = clusterFromKubeconfig(input);
  const { services, node } = await listCluster(cluster);
  return {
    services,
    node,
    nodeName: input.nodeName,
    source: { kind: "api", server: cluster.server, nodeFound: node !== undefined },
  };
}

/** One backend's rules, or why they could not be read. */
async function readLive(read: () => Promise<LiveRules>): Promise<LiveRulesFact> {
  try {
    return { ok: true, rules: await read() };
  } catch (error) {
    return {
      ok: false,
      error: errorLine(error),
      notStarted: error instanceof ToolNotStartedError,
    };
  }
}

async function nftVersion(
  runner: CommandRunner,
  nftPath: string,
): Promise<DoctorFacts["nftVersion"]> {
  try {
    const result = await runner(nftPath, ["--version"]);
    if (result.exitCode !== 0) {
      return { ok: false, error: `${nftPath} --version: ${result.stderr.trim()}` };
    }
    return { ok: true, version: result.stdout.trim() };
  } catch (error) {
    return { ok: false, error: (error as Error).message };
  }
}

/** Probes every TCP external IP:port, then the cluster IP:port of each that failed. */
async function runProbes(
  facts: Omit<DoctorFacts, "probes">,
  timeoutMs: number,
): Promise<Map<string, ProbeOutcome>> {
  const mappings = facts.result.ruleset.families
    .flatMap((family) => family.mappings)
    .filter((mapping) => mapping.protocol === "tcp");
  const probes = new Map<string, ProbeOutcome>();
  const probeAll = async (targets: readonly { ip: string; port: number }[]) => {
    const unique = [
      ...new Map(targets.map((target) => [probeKey(target.ip, target.port), target])).values(),
    ].filter((target) => !probes.has(probeKey(target.ip, target.port)));
    const outcomes = await mapLimited(unique, PROBE_CONCURRENCY, (target) =>
      probeTcp(target.ip, target.port, timeoutMs),
    );
    unique.forEach((target, i) => {
      probes.set(probeKey(target.ip, target.port), outcomes[i] as ProbeOutcome);
    });
  };
  await probeAll(mappings.map((mapping) => ({ ip: mapping.externalIP, port: mapping.port })));
  // The cluster IP tells a missing translation from a Service that answers nowhere.
  const network = facts.network;
  await probeAll(
    mappings
      .filter(
        (mapping) =>
          probes.get(probeKey(mapping.externalIP, mapping.port))?.result !== "ok" &&
          (!network.ok || network.localAddresses.has(mapping.externalIP)),
      )
      .map((mapping) => ({ ip: mapping.clusterIP, port: mapping.port })),
  );
  return probes;
}

/** Gathers the facts and decides the report. Throws only for unreadable input or an API error. */
export async function runDoctor(options: DoctorOptions): Promise<DoctorReport> {
  const { runner, backendFlags } = options;
  const inputs = await readInputs(options.input);
  const result = computeRuleset({
    services: inputs.services,
    node: inputs.node,
    config: options.config,
  });
  const settings: RulesetSettings = settingsOf(result.ruleset);

  let network: DoctorFacts["network"];
  try {
    const inspected = await inspectNodeNetwork(runner);
    network = { ok: true, ...inspected };
  } catch (error) {
    network = { ok: false, error: errorLine(error) };
  }

  // The backends' own read-back: the comparison their periodic verify makes.
  const iptablesBackend = createIptablesBackend({
    mode: backendFlags.iptablesMode,
    binDir: backendFlags.iptablesBinDir,
    runner,
  });
  const live: Record<BackendName, LiveRulesFact> = {
    nft: await readLive(() =>
      createNftBackend({ nftPath: backendFlags.nftPath, runner }).read(settings),
    ),
    iptables: await readLive(() => iptablesBackend.read(settings)),
  };
  let iptablesVariant: DoctorFacts["iptablesVariant"];
  try {
    iptablesVariant = { ok: true, ...(await iptablesBackend.detection()) };
  } catch (error) {
    iptablesVariant = {
      ok: false,
      error: live.iptables.ok ? (error as Error).message : live.iptables.error,
    };
  }

  const facts: Omit<DoctorFacts, "probes"> = {
    source: inputs.source,
    ...(inputs.nodeName === undefined ? {} : { nodeName: inputs.nodeName }),
    kernel: release(),
    network,
    nftVersion: await nftVersion(runner, backendFlags.nftPath),
    iptablesVariant,
    config: options.config,
    ...(inputs.node === undefined ? {} : { node: inputs.node }),
    result,
    backend: options.backend,
    live: live[options.backend],
    otherLive: live[otherBackendOf(options.backend)],
  };
  const probes =
    options.probeTimeoutMs === undefined
      ? undefined
      : await runProbes(facts, options.probeTimeoutMs);
  return buildDoctorReport(probes === undefined ? facts : { ...facts, probes });
}
