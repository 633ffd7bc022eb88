/**
 * The backend's decisions (full, incremental, none, fallback, errors) with a scripted runner: no kernel.
 */
import {
  BackendError,
  type CommandResult,
  type CommandRunner,
  type Ruleset,
} from "@ipvs-node-controller/core";
import { describe, expect, it } from "vitest";
import { createNftBackend, validateRuleset } from "../src/index.js";
import { mapping, ruleset } from "./helpers.js";

interface Call {
  file: string;
  args: readonly string[];
  input?: string;
}

/** A runner that records calls and answers from a script (default: success, empty output). */
function scriptedRunner(answer: (call: Call) => Partial<CommandResult> = () => ({})) {
  const calls: Call[] = [];
  const runner: CommandRunner = async (file, args, options) => {
    const call = { file, args, input: options?.input };
    calls.push(call);
    return { stdout: "", stderr: "", exitCode: 0, ...answer(call) };
  };
  return { runner, calls };
}

const web = mapping({ externalIP: "203.0.113.10", clusterIP: "10.96.0.10" });
const api = mapping({ externalIP: "203.0.113.11", clusterIP: "10.96.0.11", port: 443 });
const v1 = ruleset([web]);
const v2 = ruleset([web, api]);

function isFullSync(call: Call | undefined): boolean {
  return call?.input?.includes('{"delete":{"table"') === true;
}

describe("apply", () => {
  it("syncs fully first, then incrementally, and skips the kernel when nothing changed", async () => {
    const { runner, calls } = scriptedRunner();
    const backend = createNftBackend({ runner });
    expect(await backend.apply(v1)).toEqual({ mode: "full", changedMappings: 1 });
    expect(calls[0]?.args).toEqual(["-j", "-f", "-"]);
    expect(isFullSync(calls[0])).toBe(true);
    expect(await backend.apply(v1)).toEqual({ mode: "none", changedMappings: 0 });
    expect(calls).toHaveLength(1);
    expect(await backend.apply(v2)).toEqual({ mode: "incremental", changedMappings: 1 });
    expect(isFullSync(calls[1])).toBe(false);
    expect(calls[1]?.input).toContain('"203.0.113.11","tcp",443');
    expect(calls[1]?.input).not.toContain('"203.0.113.10","tcp",80');
  });

  it("syncs fully when asked to, and when settings change", async () => {
    const { runner, calls } = scriptedRunner();
    const backend = createNftBackend({ runner });
    await backend.apply(v1);
    expect(await backend.apply(v1, { full: true })).toEqual({ mode: "full", changedMappings: 1 });
    expect(await backend.apply(ruleset([web], { mark: 0x8000 }))).toMatchObject({ mode: "full" });
    expect(calls.map(isFullSync)).toEqual([true, true, true]);
  });

  it("falls back to a full sync when the incremental transaction fails", async () => {
    const { runner, calls } = scriptedRunner((call) =>
      isFullSync(call) ? {} : { exitCode: 1, stderr: "Error: No such file or directory" },
    );
    const backend = createNftBackend({ runner });
    await backend.apply(v1);
    expect(await backend.apply(v2)).toEqual({ mode: "full", changedMappings: 2 });
    expect(calls.map(isFullSync)).toEqual([true, false, true]);
  });

  it("throws BackendError with nft's stderr and keeps its idea of the last ruleset", async () => {
    let failing = false;
    const { runner, calls } = scriptedRunner(() =>
      failing ? { exitCode: 1, stderr: "Error: Could not process rule: Invalid argument\n" } : {},
    );
    const backend = createNftBackend({ runner });
    await backend.apply(v1);
    failing = true;
    const error = await backend.apply(v2).catch((caught: unknown) => caught);
    expect(error).toBeInstanceOf(BackendError);
    expect(error).toMatchObject({
      tool: "nft",
      notStarted: false,
      stderr: "Error: Could not process rule: Invalid argument",
      message: expect.stringContaining(
        "nft rejected the full sync of table inet ipvs-node-controller",
      ),
    });
    failing = false;
    // Still diffed against v1: the failed apply did not count.
    expect(await backend.apply(v2)).toEqual({ mode: "incremental", changedMappings: 1 });
    expect(calls).toHaveLength(4);
  });

  it("rejects an invalid ruleset before running nft", async () => {
    const { runner, calls } = scriptedRunner();
    const backend = createNftBackend({ runner });
    const bad = ruleset([
      mapping({ externalIP: "203.0.113.10", clusterIP: "10.96.0.10", port: 70000 }),
    ]);
    await expect(backend.apply(bad)).rejects.toThrow(
      /families\[0\]\.mappings\[0\]\.port 70000 is not a port/,
    );
    expect(calls).toHaveLength(0);
  });

  it("serialises concurrent applies", async () => {
    const { runner, calls } = scriptedRunner();
    const backend = createNftBackend({ runner });
    const results = await Promise.all([backend.apply(v1), backend.apply(v2), backend.apply(v2)]);
    expect(results.map((result) => result.mode)).toEqual(["full", "incremental", "none"]);
    expect(calls).toHaveLength(2);
  });
});

describe("missing or broken nft", () => {
  it("names the binary it looked for", async () => {
    const backend = createNftBackend({ nftPath: "/nonexistent/sbin/nft" });
    await expect(backend.apply(v1)).rejects.toThrow(
      'nft not found (looked for "/nonexistent/sbin/nft")',
    );
    await expect(backend.verify(v1)).rejects.toBeInstanceOf(BackendError);
    await expect(backend.cleanup()).rejects.toMatchObject({
      name: "BackendError",
      notStarted: true,
    });
  });

  it("recognises a runner's ENOENT error", async () => {
    const runner: CommandRunner = async () => {
      throw Object.assign(new Error("spawn nft ENOENT"), { code: "ENOENT" });
    };
    await expect(createNftBackend({ runner }).apply(v1)).rejects.toThrow(
      'nft not found (looked for "nft")',
    );
  });

  it("refuses a table name that is not an nft identifier", () => {
    expect(() => createNftBackend({ tableName: 'x" ; flush ruleset' })).toThrow(BackendError);
    expect(() => createNftBackend({ tableName: "" })).toThrow(/invalid tableName/);
  });
});

describe("verify and cleanup", () => {
  it("verify is false when the table is absent and throws on other nft errors", async () => {
    const absent = scriptedRunner(() => ({
      exitCode: 1,
      stderr: "Error: No such file or directory",
    }));
    expect(await createNftBackend({ runner: absent.runner }).verify(v1)).toBe(false);
    expect(absent.calls[0]?.args).toEqual(["-j", "list", "table", "inet", "ipvs-node-controller"]);
    const denied = scriptedRunner(() => ({
      exitCode: 1,
      stderr: "Error: Operation not permitted",
    }));
    await expect(createNftBackend({ runner: denied.runner }).verify(v1)).rejects.toThrow(
      /Operation not permitted/,
    );
  });

  it("verify is false for a listing that is not ours", async () => {
    const { runner } = scriptedRunner(() => ({
      stdout: '{"nftables":[{"chain":{"name":"prerouting"}}]}',
    }));
    expect(await createNftBackend({ runner }).verify(v1)).toBe(false);
  });

  it("cleanup deletes only its own table, and only when present", async () => {
    const tables = (names: string[]) =>
      JSON.stringify({ nftables: names.map((name) => ({ table: { family: "inet", name } })) });
    const present = scriptedRunner((call) =>
      call.args[1] === "list" ? { stdout: tables(["other", "mine"]) } : {},
    );
    expect(await createNftBackend({ runner: present.runner, tableName: "mine" }).cleanup()).toBe(
      true,
    );
    expect(present.calls.map((call) => call.args)).toEqual([
      ["-j", "list", "tables", "inet"],
      ["delete", "table", "inet", "mine"],
    ]);
    const absent = scriptedRunner(() => ({ stdout: tables(["other"]) }));
    expect(await createNftBackend({ runner: absent.runner, tableName: "mine" }).cleanup()).toBe(
      false,
    );
    expect(absent.calls).toHaveLength(1);
  });
});

describe("validateRuleset", () => {
  const valid = ruleset([web, mapping({ externalIP: "2001:db8::1", clusterIP: "fd00::1" })]);
  const cases: [string, (r: Ruleset) => unknown, RegExp][] = [
    ["mark out of range", (r) => ({ ...r, masqueradeMark: 2 ** 32 }), /masqueradeMark 4294967296/],
    ["mark not an integer", (r) => ({ ...r, masqueradeMark: 1.5 }), /masqueradeMark 1.5/],
    [
      "unknown family",
      (r) => ({ ...r, families: [{ ...r.families[0], family: "ipx" }] }),
      /"ipx" is not ipv4 or ipv6/,
    ],
    [
      "repeated family",
      (r) => ({ ...r, families: [r.families[0], r.families[0]] }),
      /repeats ipv4/,
    ],
    [
      "non-canonical IPv6",
      (r) => withMapping(r, 1, { externalIP: "2001:DB8::1" }),
      /not canonical \(expected "2001:db8::1"\)/,
    ],
    [
      "IPv4 in the IPv6 family",
      (r) => withMapping(r, 1, { clusterIP: "10.0.0.1" }),
      /is not an ipv6 address/,
    ],
    ["garbage address", (r) => withMapping(r, 0, { clusterIP: '1.2.3.4" }' }), /clusterIP/],
    [
      "unknown protocol",
      (r) => withMapping(r, 0, { protocol: "icmp" }),
      /"icmp" is not tcp, udp or sctp/,
    ],
    ["port 0", (r) => withMapping(r, 0, { port: 0 }), /port 0 is not a port/],
    [
      "family mismatch",
      (r) => withMapping(r, 0, { family: "ipv6" }),
      /differs from its family ipv4/,
    ],
    [
      "interface with a wildcard",
      (r) => ({
        ...r,
        families: [{ ...r.families[0], localPods: { kind: "inputInterface", name: "eth*" } }],
      }),
      /"eth\*" is not an interface name/,
    ],
    [
      "interface name too long",
      (r) => ({
        ...r,
        families: [
          { ...r.families[0], localPods: { kind: "inputInterface", name: "a".repeat(16) } },
        ],
      }),
      /is not an interface name \(1-15/,
    ],
    [
      "interface prefix too long for the wildcard",
      (r) => ({
        ...r,
        families: [
          { ...r.families[0], localPods: { kind: "inputInterfacePrefix", prefix: "a".repeat(15) } },
        ],
      }),
      /"a{15}" is not an interface prefix \(1-14/,
    ],
    [
      "CIDR with host bits",
      (r) => ({
        ...r,
        families: [
          { ...r.families[0], localPods: { kind: "sourceCIDRs", cidrs: ["10.244.1.7/24"] } },
        ],
      }),
      /not canonical \(expected "10.244.1.0\/24"\)/,
    ],
    [
      "unknown local-pod kind",
      (r) => ({ ...r, families: [{ ...r.families[0], localPods: { kind: "magic" } }] }),
      /"magic" is not a known local-pod match/,
    ],
    [
      "duplicate key",
      (r) => ({
        ...r,
        families: [{ ...r.families[0], mappings: [web, { ...web, clusterIP: "10.96.0.99" }] }],
      }),
      /repeat the key ipv4\|203.0.113.10\|tcp\|80/,
    ],
  ];

  function withMapping(r: Ruleset, familyIndex: number, fields: Record<string, unknown>): unknown {
    return {
      ...r,
      families: r.families.map((family, index) =>
        index === familyIndex
          ? { ...family, mappings: [{ ...family.mappings[0], ...fields }] }
          : family,
      ),
    };
  }

  it("accepts a valid ruleset", () => {
    expect(() => validateRuleset(valid)).not.toThrow();
  });

  it.each(cases)("rejects %s", (_name, corrupt, message) => {
    expect(() => validateRuleset(corrupt(valid) as Ruleset)).toThrow(message);
    expect(() => validateRuleset(corrupt(valid) as Ruleset)).toThrow(BackendError);
  });
});
