/**
 * SIGKILL in the middle of an apply, on the real kernel: the suite shared by
 * kill-mid-apply-nft.test.ts and kill-mid-apply-iptables-{legacy,nft}.test.ts.
 *
 * A backend replaces 10,000 mappings by 10,000 others (2,000 with iptables-nft, whose tools are
 * several times slower) in a full sync, as at start and after a failure, while a timer SIGKILLs
 * the kernel tool it started (`nft -j -f -`, `iptables-restore --noflush -w`) at a random point of
 * its run. The process that dies is the tool itself, so the kernel sees a transaction whose sender
 * vanished. After every kill:
 * - the kernel holds the complete old or the complete new ruleset, never a mix, and across the
 *   kills both occur (half of them aim at the end of the run, after the kernel may have committed);
 * - a fresh backend, as a restarted controller has, converges in one full sync;
 * - kube-proxy-like chains, other tables and an unrelated nft table are untouched.
 */
import { type ChildProcess, spawn } from "node:child_process";
import { closeSync, mkdtempSync, openSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { Backend, CommandResult, CommandRunner } from "@ipvs-node-controller/backend";
import { computeRuleset, type Ruleset, type ServiceInput } from "@ipvs-node-controller/core";
import { ADDRESS_PLAN, nftTableLines, type Topology } from "@ipvs-node-controller/test-support";
import { expect } from "vitest";

/** kube-proxy-like chains in nat and filter, as `iptables-restore` input for either family. */
export const KUBE_PROXY_LIKE = {
  ipv4: `*nat
:KUBE-SERVICES - [0:0]
:KUBE-MARK-MASQ - [0:0]
-A PREROUTING -m comment --comment "kubernetes service portals" -j KUBE-SERVICES
-A OUTPUT -m comment --comment "kubernetes service portals" -j KUBE-SERVICES
-A KUBE-SERVICES -d 10.96.0.1/32 -p tcp -m tcp --dport 443 -j KUBE-MARK-MASQ
-A KUBE-MARK-MASQ -j MARK --set-xmark 0x4000/0x4000
COMMIT
*filter
:KUBE-FIREWALL - [0:0]
-A INPUT -j KUBE-FIREWALL
-A KUBE-FIREWALL -s 203.0.113.0/24 -j DROP
COMMIT
`,
  ipv6: `*nat
:KUBE-SERVICES - [0:0]
-A PREROUTING -m comment --comment "kubernetes service portals" -j KUBE-SERVICES
-A OUTPUT -m comment --comment "kubernetes service portals" -j KUBE-SERVICES
-A KUBE-SERVICES -d fd00:10:96::1/128 -p tcp -m tcp --dport 443 -j RETURN
COMMIT
`,
} as const;

/** An nft table of somebody else. */
export const UNRELATED_NFT_TABLE = `table inet unrelated {
  set blocked { type ipv4_addr; elements = { 203.0.113.99 } }
  chain input { type filter hook input priority filter + 10; policy accept; ip saddr @blocked drop; }
}
`;

/** Feeds `input` to `tool` in the node namespace and fails on a non-zero exit. */
export async function feed(
  topology: Topology,
  tool: string,
  args: readonly string[],
  input: string,
): Promise<string> {
  const result = await topology.runner("node")(tool, args, { input });
  if (result.exitCode !== 0) throw new Error(`${tool} ${args.join(" ")}: ${result.stderr}`);
  return result.stdout;
}

/** Mappings per ruleset: 2 per Service (IPv4 and IPv6). */
export const MAPPINGS = 10_000;

/** Kills that must land inside a tool's run. */
export const KILLS = 20;

/**
 * One dual-stack LoadBalancer Service per index: LB IPs from the benchmarking range and the
 * documentation prefix, cluster IPs from the test API server's ranges. `generation` 1 re-points
 * every other Service to another cluster IP and moves every fourth one to another LB IP, so the
 * two rulesets share some mappings, differ in the translation of others, and each has mappings
 * the other lacks.
 */
function service(index: number, generation: 0 | 1): ServiceInput {
  const hi = index >> 8;
  const lo = index & 255;
  const moved = generation === 1 && index % 4 === 3;
  const repointed = generation === 1 && index % 2 === 1;
  const clusterHi = repointed ? hi + 100 : hi;
  return {
    metadata: { namespace: "load", name: `svc-${index}` },
    spec: {
      type: "LoadBalancer",
      clusterIP: `10.96.${clusterHi}.${lo}`,
      clusterIPs: [`10.96.${clusterHi}.${lo}`, `fd00:10:96::${clusterHi.toString(16)}:${lo}`],
      ports: [{ port: 80, protocol: index % 3 === 0 ? "UDP" : "TCP" }],
    },
    status: {
      loadBalancer: {
        ingress: [
          { ip: `198.${moved ? 19 : 18}.${hi}.${lo}` },
          { ip: `2001:db8:${moved ? "1:" : ""}:${hi.toString(16)}:${lo}` },
        ],
      },
    },
  };
}

/** The two rulesets the suite switches between, of `mappings` mappings each. */
export function rulesets(mappings = MAPPINGS): readonly [Ruleset, Ruleset] {
  const config = {
    families: ["ipv4", "ipv6"] as const,
    extraPodCIDRs: [ADDRESS_PLAN.podCIDR.ipv4, ADDRESS_PLAN.podCIDR.ipv6],
  };
  const make = (generation: 0 | 1) => {
    const services = Array.from({ length: mappings / 2 }, (_, index) => service(index, generation));
    const { ruleset, skipped } = computeRuleset({ services, config });
    expect(skipped).toEqual([]);
    const count = ruleset.families.reduce((sum, family) => sum + family.mappings.length, 0);
    expect(count).toBe(mappings);
    return ruleset;
  };
  return [make(0), make(1)];
}

/** A write to the kernel: the tool runs the backend's transaction. */
function isWrite(file: string, args: readonly string[]): boolean {
  return /restore$/.test(file) || (/nft$/.test(file) && args.includes("-f"));
}

/** What became of one armed kill. */
export interface KillOutcome {
  /** Whether SIGKILL reached a tool that was still running. */
  readonly landed: boolean;
  /** The tool it reached. */
  readonly tool?: string;
}

/**
 * A runner inside `namespace` whose writes can be killed: {@link KillingRunner.arm} makes the
 * next write start a timer that SIGKILLs whichever write is running when it fires. Reads pass
 * through. Stdin comes from a file, as the production runner does it (`nft -f -` cannot read a
 * socket).
 */
export class KillingRunner {
  private armed: { delayMs: number; resolve: (outcome: KillOutcome) => void } | undefined;
  private timer: NodeJS.Timeout | undefined;
  private running: { child: ChildProcess; file: string } | undefined;
  /** Durations of the writes of the last unarmed apply, to pick kill points within them. */
  writeMs: number[] = [];

  constructor(
    private readonly namespace: string,
    private readonly read: CommandRunner,
  ) {}

  /** Arms one kill `delayMs` after the next write starts; resolves with what it hit. */
  arm(delayMs: number): Promise<KillOutcome> {
    return new Promise((resolve) => {
      this.armed = { delayMs, resolve };
    });
  }

  /** Resolves an armed kill that never fired (the apply ended first) as not landed. */
  disarm(): void {
    if (this.timer !== undefined) clearTimeout(this.timer);
    this.timer = undefined;
    this.armed?.resolve({ landed: false });
    this.armed = undefined;
  }

  readonly runner: CommandRunner = async (file, args, options) => {
    if (!isWrite(file, args)) return this.read(file, args, options);
    const armed = this.armed;
    if (armed !== undefined && this.timer === undefined) {
      this.timer = setTimeout(() => {
        this.timer = undefined;
        this.armed = undefined;
        const running = this.running;
        if (running !== undefined && running.child.exitCode === null) {
          running.child.kill("SIGKILL");
          armed.resolve({ landed: true, tool: running.file });
        } else {
          armed.resolve({ landed: false });
        }
      }, armed.delayMs);
    }
    const started = performance.now();
    const result = await this.spawn(file, args, options?.input ?? "");
    if (armed === undefined) this.writeMs.push(performance.now() - started);
    return result;
  };

  private spawn(file: string, args: readonly string[], input: string): Promise<CommandResult> {
    const directory = mkdtempSync(join(tmpdir(), "kill-mid-apply-"));
    const path = join(directory, "stdin");
    writeFileSync(path, input);
    const stdin = openSync(path, "r");
    rmSync(directory, { recursive: true, force: true });
    // `ip netns exec` execs the tool in place: the pid is the tool's, and so is the SIGKILL.
    const child = spawn("ip", ["netns", "exec", this.namespace, file, ...args], {
      stdio: [stdin, "pipe", "pipe"],
    });
    closeSync(stdin);
    this.running = { child, file };
    let stdout = "";
    let stderr = "";
    child.stdout?.on("data", (chunk) => {
      stdout += chunk;
    });
    child.stderr?.on("data", (chunk) => {
      stderr += chunk;
    });
    return new Promise((resolve, reject) => {
      child.once("error", reject);
      child.once("close", (code, signal) => {
        if (this.running?.child === child) this.running = undefined;
        resolve({
          stdout,
          stderr: signal === null ? stderr : `${stderr}killed by ${signal}`,
          exitCode: code ?? 128 + 9,
        });
      });
    });
  }
}

/** Figures of one suite run, for the report. */
export interface KillFigures {
  attempts: number;
  /** Kills that reached a running tool. */
  landed: number;
  /** Of those, how many left the old ruleset and how many the new (killed after its commit). */
  landedOld: number;
  landedNew: number;
  /** Kills per tool. */
  tools: Record<string, number>;
}

/** The kernel's state in two parts: ours, and everything else. */
export interface KernelSnapshot {
  /** Everything of ours, comparably (the same text exactly when the same rules). */
  readonly ours: string;
  /** Everything that is not ours, one line per object or rule. */
  readonly others: readonly string[];
}

/** What the suite needs from a backend family. */
export interface KillSuiteTarget {
  /** Creates a backend on `runner` (a fresh one stands for a restarted controller). */
  backend(runner: CommandRunner): Backend;
  /** Puts kube-proxy-like state and other tables in place, once. */
  seed(topology: Topology): Promise<void>;
  /** Reads the kernel once. */
  snapshot(topology: Topology): Promise<KernelSnapshot>;
}

/**
 * Every nft table as lines (see `nftTableLines`): our table's, and the others' with the chains
 * and jumps of our iptables backend (iptables-nft keeps them in nft tables) counted as ours.
 */
export async function nftSnapshot(topology: Topology): Promise<KernelSnapshot> {
  const run = topology.runner("node");
  const listed = await run("nft", ["-j", "list", "tables"]);
  if (listed.exitCode !== 0) throw new Error(`nft list tables: ${listed.stderr}`);
  const tables = (
    JSON.parse(listed.stdout) as { nftables: { table?: { family: string; name: string } }[] }
  ).nftables.flatMap((item) => (item.table ? [item.table] : []));
  const ours: string[] = [];
  const others: string[] = [];
  for (const { family, name } of tables) {
    const mine = family === "inet" && name === "ipvs-node-controller";
    for (const line of await nftTableLines(run, family as "ip" | "ip6" | "inet", name)) {
      const tagged = `${family} ${name} ${line}`;
      (mine || line.includes("IPVSNC-") ? ours : others).push(tagged);
    }
  }
  return { ours: ours.sort().join("\n"), others: others.sort() };
}

/**
 * Runs the kills against `target` and returns the figures. Each kill lands at a random point of
 * the time the tools need for that transition when nobody kills them: uniformly, or, every other
 * time, near its end (where the tool may still run after the kernel committed). It goes on until
 * {@link KILLS} kills landed and both outcomes occurred. Each ruleset's
 * snapshot is taken once, right after `verify` confirmed it; later states are compared with those,
 * which costs one listing per check.
 */
export async function runKillSuite(
  topology: Topology,
  target: KillSuiteTarget,
  pair: readonly [Ruleset, Ruleset],
): Promise<KillFigures> {
  const node = topology.runner("node");
  const killing = new KillingRunner(topology.namespaces.node, node);
  const check = () => target.backend(node);
  await target.seed(topology);
  const baseline = (await target.snapshot(topology)).others;
  expect(baseline.length).toBeGreaterThan(0);

  // Warm-up: both transitions unkilled, to learn how long the writes take and what each
  // ruleset looks like in the kernel.
  const writeMs: [number, number] = [0, 0];
  const looks: [string, string] = ["", ""];
  for (const [index, ruleset] of [pair[0], pair[1], pair[0]].entries()) {
    killing.writeMs = [];
    await target.backend(killing.runner).apply(ruleset);
    if (index > 0) writeMs[index - 1] = killing.writeMs.reduce((sum, ms) => sum + ms, 0);
    expect(await check().verify(ruleset)).toBe(true);
    const snapshot = await target.snapshot(topology);
    expect(snapshot.others).toEqual(baseline);
    looks[index % 2] = snapshot.ours;
  }
  expect(looks[0]).not.toBe(looks[1]);

  const figures: KillFigures = { attempts: 0, landed: 0, landedOld: 0, landedNew: 0, tools: {} };
  const done = () => figures.landed >= KILLS && figures.landedOld > 0 && figures.landedNew > 0;
  let current = 0;
  /** Where the late kills aim, as a share of the unkilled run. */
  let late = 0.9;
  while (!done() && figures.attempts < KILLS * 4) {
    figures.attempts += 1;
    const next = 1 - current;
    const after = pair[next] as Ruleset;
    // Every other kill aims at the end of the run, where the kernel may have committed while the
    // tool still runs: uniform kills alone leave the new ruleset rarely (2 of 20 with nft, 1 of
    // 20 with iptables-legacy, whose tool exits right after its commit), and both outcomes must
    // occur for the suite to show that each is complete. That aim moves later after a kill that
    // left the old ruleset and earlier after one that came too late, so it settles between them.
    const aimLate = figures.attempts % 2 === 0;
    const point = aimLate ? late + (Math.random() - 0.5) * 0.02 : Math.random();
    const outcome = killing.arm(Math.max(0, point) * (writeMs[current] as number));
    // A fresh backend: the first apply of a process is a full, atomic replacement.
    const applied = await target
      .backend(killing.runner)
      .apply(after)
      .then(
        () => true,
        () => false,
      );
    killing.disarm();
    const { landed, tool } = await outcome;
    if (landed) {
      figures.landed += 1;
      const name = (tool ?? "").replace(/.*\//, "");
      figures.tools[name] = (figures.tools[name] ?? 0) + 1;
    } else {
      expect(applied).toBe(true);
    }

    // Complete old or complete new, never a mix; nothing else touched.
    const killed = await target.snapshot(topology);
    const isNew = killed.ours === looks[next];
    const isOld = killed.ours === looks[current];
    expect(
      isNew || isOld,
      `after kill ${figures.attempts} (${tool ?? "missed"}): neither the old nor the new ruleset`,
    ).toBe(true);
    expect(killed.others).toEqual(baseline);
    if (landed && isNew) figures.landedNew += 1;
    if (landed && isOld) figures.landedOld += 1;
    if (aimLate && !landed) late -= 0.03;
    if (aimLate && landed && isOld) late += 0.03;

    // A restarted controller converges in one sync.
    const converged = await check().apply(after);
    expect(converged.mode).toBe("full");
    const snapshot = await target.snapshot(topology);
    expect(snapshot.ours).toBe(looks[next]);
    expect(snapshot.others).toEqual(baseline);
    current = next;
  }
  expect(figures.landed, "kills keep missing the tools").toBeGreaterThanOrEqual(KILLS);
  expect(figures.landedOld, "no kill left the old ruleset").toBeGreaterThan(0);
  expect(figures.landedNew, "no kill left the new ruleset (after the commit)").toBeGreaterThan(0);
  expect(await check().verify(pair[current] as Ruleset)).toBe(true);
  return figures;
}
