/**
 * The shared applier, over a kernel that records what it is sent and answers as it is told: when
 * a change is sent as a change and when as a full sync, what it keeps of the kernel, and how a
 * verify that overlaps a write is answered.
 */
import {
  type LiveRules,
  type Mapping,
  MappingTable,
  ownerOf,
  type Ruleset,
  type RulesetDiff,
  type RulesetSettings,
  updateBetween,
} from "@ipvs-node-controller/core";
import { describe, expect, it } from "vitest";
import {
  type Applied,
  type ChangeOutcome,
  createBackend,
  type Kernel,
  ToolRefusedError,
} from "../src/index.js";

const settings: RulesetSettings = {
  masqueradeMark: 0x4000,
  markPodTraffic: false,
  families: [{ family: "ipv4", localPods: { kind: "sourceCIDRs", cidrs: ["10.244.1.0/24"] } }],
};

const mapping = (externalIP: string, clusterIP = "10.96.0.10"): Mapping => ({
  family: "ipv4",
  externalIP,
  protocol: "tcp",
  port: 80,
  clusterIP,
  service: { namespace: "default", name: "web" },
});

const ruleset = (mappings: Mapping[], overrides: Partial<Ruleset> = {}): Ruleset => ({
  ...settings,
  families: [{ ...(settings.families[0] as Ruleset["families"][number]), mappings }],
  ...overrides,
});

/** A kernel that holds what it was sent, answers changes with `outcome`, and lists itself. */
class RecordingKernel implements Kernel {
  readonly name = "recording";
  readonly sent: string[] = [];
  table = new MappingTable();
  outcome: ChangeOutcome = "written";
  failWrites: Error | undefined;
  /** Called between a read's listing and its answer, to write meanwhile. */
  duringRead: (() => Promise<void>) | undefined;

  render(r: Ruleset): string {
    return JSON.stringify(r);
  }
  async writeFull(r: Ruleset): Promise<void> {
    if (this.failWrites) throw this.failWrites;
    this.sent.push(`full ${r.families[0]?.mappings.length}`);
    this.table = MappingTable.of(r);
  }
  async writeChange(diff: RulesetDiff, applied: Applied): Promise<ChangeOutcome> {
    if (this.failWrites) throw this.failWrites;
    this.sent.push(`change +${diff.added.length} -${diff.removed.length} ~${diff.changed.length}`);
    expect(applied.table.size).toBe(this.table.size);
    if (this.outcome === "written") this.table.apply(diff);
    return this.outcome;
  }
  async read(s: RulesetSettings): Promise<LiveRules> {
    const mappings = this.table
      .toRuleset(s)
      .families.flatMap((f) => f.mappings)
      .map((m) => ({ ...m, owner: ownerOf(m) }));
    await this.duringRead?.();
    return { backend: "recording", tool: "memory", present: true, mappings, problems: [] };
  }
  async remove(): Promise<boolean> {
    const had = this.table.size > 0;
    this.table = new MappingTable();
    return had;
  }
}

const a = ruleset([mapping("192.0.2.1")]);
const ab = ruleset([mapping("192.0.2.1"), mapping("192.0.2.2")]);

describe("the shared applier", () => {
  it("writes a full sync first, then only what an update changes against the kernel", async () => {
    const kernel = new RecordingKernel();
    const backend = createBackend(kernel);
    // Nothing applied yet: the update alone, on an empty kernel, as a full sync.
    expect(await backend.applyChanges(updateBetween(ruleset([]), a))).toMatchObject({
      mode: "full",
    });
    const result = await backend.applyChanges(updateBetween(a, ab));
    expect(result).toMatchObject({ mode: "incremental", changedMappings: 1 });
    expect(result.changes?.added.map((m) => m.externalIP)).toEqual(["192.0.2.2"]);
    // A key the update names but that the kernel already holds as wanted costs nothing.
    expect(
      await backend.applyChanges({ settings, mappings: [mapping("192.0.2.1")], removed: [] }),
    ).toEqual({ mode: "none", changedMappings: 0 });
    expect(kernel.sent).toEqual(["full 1", "change +1 -0 ~0"]);
  });

  it("answers a change of settings, a refused change and a costly one with a full sync", async () => {
    const kernel = new RecordingKernel();
    const backend = createBackend(kernel);
    await backend.apply(a);
    const marked = { ...ab, markPodTraffic: true };
    expect(await backend.applyChanges(updateBetween(a, marked))).toMatchObject({ mode: "full" });
    kernel.outcome = "refused";
    expect(
      await backend.applyChanges(updateBetween(marked, { ...a, markPodTraffic: true })),
    ).toMatchObject({ mode: "full", changedMappings: 1 });
    kernel.outcome = "rewrite";
    expect(
      await backend.applyChanges(updateBetween({ ...a, markPodTraffic: true }, marked)),
    ).toMatchObject({ mode: "full", changedMappings: 2 });
    expect(kernel.sent).toEqual([
      "full 1",
      "full 2",
      "change +0 -1 ~0",
      "full 1",
      "change +1 -0 ~0",
      "full 2",
    ]);
  });

  it("stops trusting the kernel after drift or a failed write, until a full sync", async () => {
    const kernel = new RecordingKernel();
    const backend = createBackend(kernel);
    await backend.apply(a);
    kernel.table = new MappingTable(); // flushed behind our back
    expect(await backend.verify(a)).toBe(false);
    expect(await backend.applyChanges(updateBetween(a, ab))).toMatchObject({ mode: "full" });
    kernel.failWrites = new ToolRefusedError("refused", "tool", 1, "no");
    await expect(backend.applyChanges(updateBetween(ab, a))).rejects.toThrow("refused");
    kernel.failWrites = undefined;
    expect(await backend.applyChanges(updateBetween(ab, a))).toMatchObject({ mode: "full" });
    expect(await backend.verify(a)).toBe(true);
  });

  it("answers true to a verify that a write overlapped, leaving it to the next one", async () => {
    const kernel = new RecordingKernel();
    const backend = createBackend(kernel);
    await backend.apply(a);
    kernel.duringRead = async () => {
      kernel.duringRead = undefined;
      await backend.applyChanges(updateBetween(a, ab));
    };
    // The listing shows `a`, but a write landed before the answer: not drift.
    expect(await backend.verify(ab)).toBe(true);
    expect(await backend.verify(ab)).toBe(true);
    expect(await backend.verify(a)).toBe(false);
  });

  it("starts from scratch after cleanup", async () => {
    const kernel = new RecordingKernel();
    const backend = createBackend(kernel);
    await backend.apply(ab);
    expect(await backend.cleanup()).toBe(true);
    expect(await backend.applyChanges(updateBetween(ab, a))).toMatchObject({ mode: "full" });
  });

  it("validates before any write", async () => {
    const kernel = new RecordingKernel();
    const backend = createBackend(kernel);
    const hostile = ruleset([{ ...mapping("192.0.2.1"), service: { namespace: "x", name: '"' } }]);
    await expect(backend.apply(hostile)).rejects.toThrow(/invalid ruleset/);
    await expect(backend.verify(hostile)).rejects.toThrow(/invalid ruleset/);
    expect(kernel.sent).toEqual([]);
  });
});
