/**
 * The backend's process handling, with scripted runners instead of the kernel.
 */

import {
  type CommandResult,
  type CommandRunner,
  ToolNotStartedError,
  ToolRefusedError,
} from "@ipvs-node-controller/backend";
import {
  ConfigError,
  InvalidRulesetError,
  type Mapping,
  updateBetween,
} from "@ipvs-node-controller/core";
import { describe, expect, it } from "vitest";
import {
  createIptablesBackend,
  detectIptablesVariant,
  dnatRule,
  LEGACY_TABLE_LISTS,
  MAX_DELETE_SCAN_PER_RULE,
  rulesetTargets,
  type TargetState,
  variantBinaries,
} from "../src/index.js";
import { family, mapping, ruleset } from "./fixtures.js";

const EMPTY_NAT = "*nat\n:PREROUTING ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\nCOMMIT\n";

const ok = (stdout = ""): CommandResult => ({ stdout, stderr: "", exitCode: 0 });

/** A runner answering from a table keyed by the program's file name, recording every call. */
function scripted(
  answers: Record<string, (args: readonly string[], input?: string) => CommandResult>,
) {
  const calls: { file: string; args: readonly string[]; input?: string }[] = [];
  const runner: CommandRunner = async (file, args, options) => {
    calls.push({ file, args, input: options?.input });
    const answer = answers[file];
    if (!answer) throw new ToolNotStartedError(file, "ENOENT");
    return answer(args, options?.input);
  };
  return { runner, calls };
}

const simple = ruleset([
  family("ipv4", { kind: "sourceCIDRs", cidrs: ["10.244.1.0/24"] }, [
    mapping("192.0.2.1", 80, "10.96.0.1"),
  ]),
]);

/** Save output with `n` rules in the filter table, optionally with the kubelet's hint chain. */
function saveWith(rules: number, hint = false): string {
  const lines = ["*mangle", hint ? ":KUBE-IPTABLES-HINT - [0:0]" : "", "COMMIT", "*filter"];
  for (let i = 0; i < rules; i++) lines.push(`-A INPUT -s 203.0.113.${i}/32 -j DROP`);
  lines.push("COMMIT", "");
  return lines.join("\n");
}

describe("detectIptablesVariant", () => {
  const cases: {
    name: string;
    legacy: number;
    nft: number;
    legacyHint?: boolean;
    nftHint?: boolean;
    expected: "legacy" | "nft";
  }[] = [
    { name: "legacy sees more rules", legacy: 5, nft: 2, expected: "legacy" },
    { name: "nft sees more rules", legacy: 1, nft: 3, expected: "nft" },
    { name: "a tie prefers nft", legacy: 2, nft: 2, expected: "nft" },
    { name: "nothing anywhere prefers nft", legacy: 0, nft: 0, expected: "nft" },
    { name: "the kubelet's hint in nft wins", legacy: 9, nft: 0, nftHint: true, expected: "nft" },
    {
      name: "the kubelet's hint in legacy wins",
      legacy: 0,
      nft: 9,
      legacyHint: true,
      expected: "legacy",
    },
  ];
  it.each(cases)("$name", async ({ legacy, nft, legacyHint, nftHint, expected }) => {
    const { runner } = scripted({
      "iptables-legacy-save": () => ok(saveWith(legacy, legacyHint)),
      "ip6tables-legacy-save": () => ok(""),
      "iptables-nft-save": () => ok(saveWith(nft, nftHint)),
      "ip6tables-nft-save": () => ok(""),
    });
    const detection = await detectIptablesVariant(runner);
    expect(detection.variant).toBe(expected);
    expect(detection.reason).not.toBe("");
  });

  it("counts IPv6 rules too, and treats a failing tool as seeing nothing", async () => {
    const { runner } = scripted({
      "iptables-legacy-save": () => ({ stdout: "", stderr: "no table", exitCode: 1 }),
      "ip6tables-legacy-save": () => ok(saveWith(4)),
      "iptables-nft-save": () => ok(saveWith(1)),
      "ip6tables-nft-save": () => ok(""),
    });
    expect(await detectIptablesVariant(runner)).toMatchObject({
      variant: "legacy",
      legacyRules: 4,
      nftRules: 1,
    });
  });

  it("names the tools when none of them can be started", async () => {
    const { runner } = scripted({});
    await expect(detectIptablesVariant(runner, "/opt/xt")).rejects.toThrow(
      /\/opt\/xt\/iptables-nft-save.*\/opt\/xt\/iptables-legacy-save/,
    );
  });

  it("looks for the tools in binDir", () => {
    expect(variantBinaries("legacy", "/host/sbin")).toEqual({
      iptablesRestore: "/host/sbin/iptables-legacy-restore",
      iptablesSave: "/host/sbin/iptables-legacy-save",
      ip6tablesRestore: "/host/sbin/ip6tables-legacy-restore",
      ip6tablesSave: "/host/sbin/ip6tables-legacy-save",
    });
  });
});

describe("createIptablesBackend", () => {
  it("detects the variant once, logs it, and uses that variant's tools", async () => {
    const messages: string[] = [];
    const { runner, calls } = scripted({
      "iptables-legacy-save": (args) => ok(args.includes("nat") ? EMPTY_NAT : saveWith(3)),
      "ip6tables-legacy-save": () => ok(EMPTY_NAT),
      "iptables-legacy-restore": () => ok(),
      "iptables-nft-save": () => ok(""),
      "ip6tables-nft-save": () => ok(""),
    });
    const backend = createIptablesBackend({ runner, log: (m) => messages.push(m) });
    expect(await backend.variant()).toBe("legacy");
    expect(await backend.apply(simple)).toEqual({ mode: "full", changedMappings: 1 });
    expect(await backend.variant()).toBe("legacy");
    expect(messages.filter((m) => m.startsWith("using iptables-legacy"))).toHaveLength(1);
    expect(calls.filter((c) => c.file === "iptables-nft-save")).toHaveLength(2);
    const restore = calls.find((c) => c.file === "iptables-legacy-restore");
    expect(restore?.args).toEqual(["--noflush", "-w"]);
    expect(restore?.input).toBe(backend.render(simple).split("\n").slice(1).join("\n"));
  });

  it("prefers explicit binaries over the variant's defaults", async () => {
    const { runner, calls } = scripted({
      "/host/iptables-save": () => ok(EMPTY_NAT),
      "ip6tables-nft-save": () => ok(EMPTY_NAT),
      "/host/iptables-restore": () => ok(),
    });
    const backend = createIptablesBackend({
      mode: "nft",
      runner,
      binaries: { iptablesSave: "/host/iptables-save", iptablesRestore: "/host/iptables-restore" },
    });
    await backend.apply(simple);
    expect(calls.map((c) => c.file)).toEqual([
      "/host/iptables-save",
      "ip6tables-nft-save",
      "/host/iptables-restore",
    ]);
  });

  it("quotes the line iptables-restore refused", async () => {
    const { runner } = scripted({
      "iptables-nft-save": () => ok(EMPTY_NAT),
      "ip6tables-nft-save": () => ok(EMPTY_NAT),
      "iptables-nft-restore": () => ({
        stdout: "",
        stderr: "iptables-nft-restore: Chain 'X' does not exist\nError occurred at line: 7\n",
        exitCode: 2,
      }),
    });
    const error = await createIptablesBackend({ mode: "nft", runner })
      .apply(simple)
      .catch((e: unknown) => e);
    expect(error).toBeInstanceOf(ToolRefusedError);
    expect((error as ToolRefusedError).tool).toBe("iptables-nft-restore");
    expect((error as ToolRefusedError).exitCode).toBe(2);
    expect((error as ToolRefusedError).stderr).toMatch(/does not exist/);
    expect((error as ToolRefusedError).message).toContain("line 7: :IPVSNC-DNAT-01 - [0:0]");
  });

  describe("a restore that reports a failure", () => {
    const dual = ruleset([
      family("ipv4", { kind: "sourceCIDRs", cidrs: ["10.244.1.0/24"] }, [
        mapping("192.0.2.1", 80, "10.96.0.1"),
      ]),
      family("ipv6", { kind: "sourceCIDRs", cidrs: ["fd00:10:244:1::/64"] }, [
        mapping("2001:db8::1", 80, "fd00:10:96::1"),
      ]),
    ]);
    /** What iptables-save prints once `target` is in an otherwise empty nat table. */
    const saveOf = (target: TargetState) =>
      [
        "*nat",
        ":PREROUTING ACCEPT [0:0]",
        ":OUTPUT ACCEPT [0:0]",
        ...[...target.chains.keys()].map((name) => `:${name} - [0:0]`),
        ...target.jumps.map((jump) => `-A ${jump.chain} ${jump.spec}`),
        ...[...target.chains].flatMap(([name, rules]) => rules.map((spec) => `-A ${name} ${spec}`)),
        "COMMIT",
        "",
      ].join("\n");

    /** A kernel of two nat tables; the IPv6 restore exits 137 after `committing` or not. */
    function killedIpv6Restore(committed: boolean) {
      const targets = rulesetTargets(dual);
      const state = { ipv4: EMPTY_NAT, ipv6: EMPTY_NAT };
      const { runner, calls } = scripted({
        "iptables-nft-save": () => ok(state.ipv4),
        "ip6tables-nft-save": () => ok(state.ipv6),
        "iptables-nft-restore": (_args, input) => {
          // The backend's first restore installs the rules, a second one is the roll-back.
          state.ipv4 = input?.includes("-I PREROUTING")
            ? saveOf(targets.get("ipv4") as TargetState)
            : EMPTY_NAT;
          return ok();
        },
        "ip6tables-nft-restore": () => {
          if (committed) state.ipv6 = saveOf(targets.get("ipv6") as TargetState);
          return { stdout: "", stderr: "", exitCode: 137 };
        },
      });
      return { runner, calls, state };
    }

    it("rolls the other family back when it changed nothing", async () => {
      const { runner, state } = killedIpv6Restore(false);
      await expect(createIptablesBackend({ mode: "nft", runner }).apply(dual)).rejects.toThrow(
        ToolRefusedError,
      );
      expect(state).toEqual({ ipv4: EMPTY_NAT, ipv6: EMPTY_NAT });
    });

    it("keeps both families when its rules went in before it died", async () => {
      const { runner, state } = killedIpv6Restore(true);
      const backend = createIptablesBackend({ mode: "nft", runner });
      expect((await backend.apply(dual)).mode).toBe("full");
      expect(state.ipv4).not.toBe(EMPTY_NAT);
      expect(state.ipv6).not.toBe(EMPTY_NAT);
      expect(await backend.verify(dual)).toBe(true);
    });
  });

  it("fails on a failing save of an enabled family", async () => {
    const { runner } = scripted({
      "iptables-nft-save": () => ({ stdout: "", stderr: "permission denied", exitCode: 4 }),
    });
    await expect(createIptablesBackend({ mode: "nft", runner }).apply(simple)).rejects.toThrow(
      /iptables-nft-save -t nat failed with exit code 4: permission denied/,
    );
  });

  it("tolerates an unreadable IPv6 table when IPv6 is not in use", async () => {
    const messages: string[] = [];
    const { runner } = scripted({
      "iptables-nft-save": () => ok(EMPTY_NAT),
      "ip6tables-nft-save": () => ({ stdout: "", stderr: "no IPv6", exitCode: 1 }),
      "iptables-nft-restore": () => ok(),
    });
    const backend = createIptablesBackend({ mode: "nft", runner, log: (m) => messages.push(m) });
    expect((await backend.apply(simple)).mode).toBe("full");
    expect(await backend.cleanup()).toBe(false);
    expect(messages.some((m) => m.includes("cannot read the ipv6 nat table"))).toBe(true);
  });

  it("never tolerates a tool that cannot be started", async () => {
    const { runner } = scripted({ "iptables-nft-save": () => ok(EMPTY_NAT) });
    const cleanup = createIptablesBackend({ mode: "nft", runner }).cleanup();
    await expect(cleanup).rejects.toThrow(/ip6tables-nft-save could not be started/);
    await expect(cleanup).rejects.toBeInstanceOf(ToolNotStartedError);
  });

  it("runs concurrent writes one after another", async () => {
    const events: string[] = [];
    let inFlight = 0;
    const slow = (name: string, result: () => CommandResult) => async () => {
      inFlight++;
      events.push(`${name}:${inFlight}`);
      await new Promise((resolve) => setTimeout(resolve, 5));
      inFlight--;
      return result();
    };
    const runner: CommandRunner = async (file) => {
      if (file.endsWith("-save")) return slow(file, () => ok(EMPTY_NAT))();
      return slow(file, () => ok())();
    };
    const backend = createIptablesBackend({ mode: "nft", runner });
    const results = await Promise.allSettled([
      backend.apply(simple),
      backend.apply(ruleset([family("ipx" as never, { kind: "sourceCIDRs", cidrs: [] }, [])])),
      backend.cleanup(),
      backend.apply(simple),
    ]);
    expect(results.map((r) => r.status)).toEqual([
      "fulfilled",
      "rejected",
      "fulfilled",
      "fulfilled",
    ]);
    expect(events.length).toBeGreaterThan(4);
    expect(events.every((e) => e.endsWith(":1"))).toBe(true);
  });

  it("refuses an unknown mode", () => {
    expect(() => createIptablesBackend({ mode: "xtables" as never })).toThrow(ConfigError);
  });

  it("refuses a bad ruleset before running anything", async () => {
    const { runner, calls } = scripted({});
    const backend = createIptablesBackend({ mode: "nft", runner });
    const bad = ruleset([family("ipv4", { kind: "inputInterface", name: "eth0 -j DROP" }, [])]);
    await expect(backend.apply(bad)).rejects.toThrow(/localPods\.name/);
    await expect(backend.verify(bad)).rejects.toThrow(InvalidRulesetError);
    expect(calls).toEqual([]);
  });
});

describe("the production runner", () => {
  it("names a program that does not exist", async () => {
    const backend = createIptablesBackend({ mode: "nft", binDir: "/nonexistent" });
    await expect(backend.apply(simple)).rejects.toThrow(
      "/nonexistent/iptables-nft-save could not be started: ENOENT",
    );
  });
});

describe("changes", () => {
  const POD_CIDRS = { kind: "sourceCIDRs", cidrs: ["10.244.1.0/24"] } as const;
  const POD_CIDRS_V6 = { kind: "sourceCIDRs", cidrs: ["fd00:10:244:1::/64"] } as const;
  const v4 = (...mappings: Mapping[]) => ruleset([family("ipv4", POD_CIDRS, mappings)]);
  // web and api share bucket 01; web6 is alone in bucket 01 of IPv6.
  const web = mapping("192.0.2.1", 80, "10.96.0.1");
  const api = mapping("192.0.2.1", 443, "10.96.0.2", { name: "api" });
  const web6 = mapping("2001:db8::1", 80, "fd00::1");
  const dual = (m4: Mapping[], m6: Mapping[]) =>
    ruleset([family("ipv4", POD_CIDRS, m4), family("ipv6", POD_CIDRS_V6, m6)]);
  const doc = (...lines: string[]) => ["*nat", ...lines, "COMMIT", ""].join("\n");

  /** A kernel whose nat tables are always empty and whose restores accept everything. */
  const accepting = () =>
    scripted({
      "iptables-nft-save": () => ok(EMPTY_NAT),
      "ip6tables-nft-save": () => ok(EMPTY_NAT),
      "iptables-nft-restore": () => ok(),
      "ip6tables-nft-restore": () => ok(),
    });

  it("sends only the rules that change, and reads nothing back", async () => {
    const { runner, calls } = accepting();
    const backend = createIptablesBackend({ mode: "nft", runner });
    await backend.apply(v4(web));
    calls.length = 0;
    expect(await backend.applyChanges(updateBetween(v4(web), v4(web, api)))).toMatchObject({
      mode: "incremental",
      changedMappings: 1,
    });
    expect(calls).toEqual([
      {
        file: "iptables-nft-restore",
        args: ["--noflush", "-w"],
        input: doc(`-A IPVSNC-DNAT-01 ${dnatRule(api)}`),
      },
    ]);
    // An update is measured against what was applied, in memory.
    calls.length = 0;
    expect(await backend.applyChanges(updateBetween(v4(web, api), v4(api)))).toMatchObject({
      mode: "incremental",
      changedMappings: 1,
    });
    expect(calls.map((c) => c.input)).toEqual([doc(`-D IPVSNC-DNAT-01 ${dnatRule(web)}`)]);
    calls.length = 0;
    expect(await backend.applyChanges(updateBetween(v4(web), v4(api)))).toEqual({
      mode: "none",
      changedMappings: 0,
    });
    expect(calls).toEqual([]);
  });

  it("reads back a family that is not enabled only while it may hold rules of ours", async () => {
    const { runner, calls } = accepting();
    const backend = createIptablesBackend({ mode: "nft", runner });
    const saves = () => calls.filter((c) => c.file.endsWith("-save")).map((c) => c.file);
    // The first sync of an instance looks everywhere: an earlier process may have enabled IPv6.
    await backend.apply(v4(web));
    expect(saves()).toEqual(["iptables-nft-save", "ip6tables-nft-save"]);
    // A full sync looks at IPv4 only now; a verify reads both, to find rules left anywhere.
    calls.length = 0;
    await backend.apply(v4(web));
    expect(saves()).toEqual(["iptables-nft-save"]);
    calls.length = 0;
    await backend.verify(v4(web));
    expect(saves()).toEqual(["iptables-nft-save", "ip6tables-nft-save"]);
    // Enabling IPv6 is a settings change: a full sync of both.
    calls.length = 0;
    expect((await backend.apply(dual([web], [web6]))).mode).toBe("full");
    expect(saves()).toEqual(["iptables-nft-save", "ip6tables-nft-save"]);
    // Disabling it again must look there to remove ours.
    calls.length = 0;
    expect((await backend.apply(v4(web))).mode).toBe("full");
    expect(saves()).toEqual(["iptables-nft-save", "ip6tables-nft-save"]);
  });

  it("rewrites everything when the kernel refuses a change", async () => {
    const messages: string[] = [];
    const { runner, calls } = scripted({
      "iptables-nft-save": () => ok(EMPTY_NAT),
      "iptables-nft-restore": (_args, input) =>
        input?.startsWith("*nat\n-D")
          ? { stdout: "", stderr: "iptables-nft-restore: line 2 failed\n", exitCode: 1 }
          : ok(),
      "ip6tables-nft-save": () => ok(EMPTY_NAT),
    });
    const backend = createIptablesBackend({ mode: "nft", runner, log: (m) => messages.push(m) });
    await backend.apply(v4(web, api));
    calls.length = 0;
    expect(await backend.applyChanges(updateBetween(v4(web, api), v4(api)))).toEqual({
      mode: "full",
      changedMappings: 1,
    });
    expect(calls.map((c) => c.file)).toEqual([
      "iptables-nft-restore",
      "iptables-nft-save",
      "iptables-nft-restore",
    ]);
    expect(calls[2]?.input).toBe(backend.render(v4(api)).split("\n").slice(1).join("\n"));
    expect(messages).toEqual([
      expect.stringMatching(
        /^incremental change refused, rewriting our chains: .*\(line 2: -D IPVSNC-DNAT-01 -d 192\.0\.2\.1\/32 -p tcp -m tcp --dport 80 /,
      ),
    ]);
    // From the rewritten state, changes are incremental again.
    expect((await backend.applyChanges(updateBetween(v4(api), v4(api, web)))).mode).toBe(
      "incremental",
    );
  });

  it("rewrites everything when the settings change", async () => {
    const { runner, calls } = accepting();
    const backend = createIptablesBackend({ mode: "nft", runner });
    await backend.apply(v4(web));
    calls.length = 0;
    const marked = { ...v4(web), masqueradeMark: 0x8000 };
    expect(await backend.applyChanges(updateBetween(v4(web), marked))).toEqual({
      mode: "full",
      changedMappings: 1,
    });
    expect(calls.map((c) => c.file)).toEqual(["iptables-nft-save", "iptables-nft-restore"]);
    expect(calls[1]?.input).toContain("--set-xmark 0x8000/0x8000");
  });

  it("rewrites everything rather than delete more rules than a rewrite costs", async () => {
    const size = MAX_DELETE_SCAN_PER_RULE + 8;
    const keep = (all: Mapping[], n: number) => v4(...all.slice(all.length - n));
    // One bucket holds the whole family: each delete reads all of it.
    const ports = Array.from({ length: size }, (_, i) =>
      mapping("192.0.2.1", 1000 + i, "10.96.0.1", { name: `svc-${i}` }),
    );
    const { runner, calls } = accepting();
    const backend = createIptablesBackend({ mode: "nft", runner });
    await backend.apply(v4(...ports));
    calls.length = 0;
    const tooMany = size - MAX_DELETE_SCAN_PER_RULE - 1;
    expect(await backend.applyChanges(updateBetween(v4(...ports), keep(ports, tooMany)))).toEqual({
      mode: "full",
      changedMappings: tooMany,
    });
    expect(calls.map((c) => c.file)).toEqual(["iptables-nft-save", "iptables-nft-restore"]);
    await backend.apply(v4(...ports));
    calls.length = 0;
    expect(
      await backend.applyChanges(updateBetween(v4(...ports), keep(ports, tooMany + 1))),
    ).toMatchObject({ mode: "incremental", changedMappings: MAX_DELETE_SCAN_PER_RULE });
    expect(calls.map((c) => c.file)).toEqual(["iptables-nft-restore"]);

    // One bucket per mapping: the buckets that empty are flushed, not read rule by rule.
    const addresses = Array.from({ length: size }, (_, i) =>
      mapping(`192.0.2.${i + 1}`, 443, "10.96.0.1", { name: `svc-${i}` }),
    );
    await backend.apply(v4(...addresses));
    calls.length = 0;
    expect(
      await backend.applyChanges(updateBetween(v4(...addresses), keep(addresses, 1))),
    ).toMatchObject({ mode: "incremental", changedMappings: size - 1 });
    expect(calls.map((c) => c.input?.match(/^-[DFX] /gm)?.length)).toEqual([3 * (size - 1)]);
  });

  it("stops trusting what it applied once a verify found drift", async () => {
    const { runner, calls } = accepting();
    const backend = createIptablesBackend({ mode: "nft", runner });
    await backend.apply(v4(web));
    // The scripted kernel never holds anything: every verify finds drift.
    expect(await backend.verify(v4(web))).toBe(false);
    calls.length = 0;
    expect((await backend.applyChanges(updateBetween(v4(web), v4(web, api)))).mode).toBe("full");
    expect(calls.map((c) => c.file)).toEqual(["iptables-nft-save", "iptables-nft-restore"]);
  });

  it("undoes the IPv4 part of a change when the IPv6 program cannot run, then rewrites", async () => {
    let ip6Missing = false;
    const { runner, calls } = scripted({
      "iptables-nft-save": () => ok(EMPTY_NAT),
      "ip6tables-nft-save": () => ok(EMPTY_NAT),
      "iptables-nft-restore": () => ok(),
      "ip6tables-nft-restore": () => {
        if (ip6Missing) throw new ToolNotStartedError("ip6tables-nft-restore", "ENOENT");
        return ok();
      },
    });
    const messages: string[] = [];
    const backend = createIptablesBackend({ mode: "nft", runner, log: (m) => messages.push(m) });
    const before = dual([web], [web6]);
    const after = dual([web, api], []);
    await backend.apply(before);
    calls.length = 0;
    ip6Missing = true;
    await expect(backend.applyChanges(updateBetween(before, after))).rejects.toThrow(
      ToolNotStartedError,
    );
    expect(calls.map((c) => [c.file, c.input])).toEqual([
      ["iptables-nft-restore", doc(`-A IPVSNC-DNAT-01 ${dnatRule(api)}`)],
      [
        "ip6tables-nft-restore",
        doc(
          "-D IPVSNC-DNAT -d ::1/::ff -g IPVSNC-DNAT-01",
          "-F IPVSNC-DNAT-01",
          "-X IPVSNC-DNAT-01",
        ),
      ],
      ["iptables-nft-restore", doc(`-D IPVSNC-DNAT-01 ${dnatRule(api)}`)],
    ]);
    expect(messages).toEqual(["rolled ipv4 back to its previous rules"]);
    calls.length = 0;
    ip6Missing = false;
    expect((await backend.applyChanges(updateBetween(before, after))).mode).toBe("full");
    expect(calls.map((c) => c.file)).toEqual([
      "iptables-nft-save",
      "ip6tables-nft-save",
      "iptables-nft-restore",
      "ip6tables-nft-restore",
    ]);
  });
});

describe("looking before touching iptables-legacy", () => {
  const missing = (file: string): CommandResult => ({
    stdout: "",
    stderr: `cat: ${file}: No such file or directory\n`,
    exitCode: 1,
  });
  /** `cat` of the two table lists: a string is the file's content, undefined a missing file. */
  const tableLists =
    (ipv4: string | undefined, ipv6: string | undefined) => (args: readonly string[]) => {
      const content = args[0] === LEGACY_TABLE_LISTS.ipv4 ? ipv4 : ipv6;
      return content === undefined ? missing(args[0] as string) : ok(content);
    };
  const legacyCalls = (calls: { file: string; args: readonly string[] }[]) =>
    calls.filter((c) => c.file.includes("legacy")).map((c) => [c.file, ...c.args].join(" "));

  it.each([
    { name: "no legacy table at all", ipv4: "", ipv6: undefined, expected: [] },
    {
      name: "an IPv4 filter table only",
      ipv4: "filter\n",
      ipv6: "",
      expected: ["iptables-legacy-save"],
    },
    {
      name: "mangle and nat in IPv4, filter in IPv6",
      ipv4: "mangle\nnat\n",
      ipv6: "filter\n",
      expected: ["iptables-legacy-save -t mangle", "iptables-legacy-save", "ip6tables-legacy-save"],
    },
  ])("detection asks iptables-legacy only about existing tables: $name", async (c) => {
    const { runner, calls } = scripted({
      cat: tableLists(c.ipv4, c.ipv6),
      "iptables-nft-save": () => ok(""),
      "ip6tables-nft-save": () => ok(""),
      "iptables-legacy-save": () => ok(""),
      "ip6tables-legacy-save": () => ok(""),
    });
    expect((await detectIptablesVariant(runner)).variant).toBe("nft");
    expect(legacyCalls(calls)).toEqual(c.expected);
  });

  it("detection asks every tool when the table lists cannot be read", async () => {
    const { runner, calls } = scripted({
      "iptables-nft-save": () => ok(""),
      "ip6tables-nft-save": () => ok(""),
      "iptables-legacy-save": () => ok(""),
      "ip6tables-legacy-save": () => ok(""),
    });
    await detectIptablesVariant(runner);
    expect(legacyCalls(calls)).toEqual([
      "iptables-legacy-save -t mangle",
      "iptables-legacy-save",
      "ip6tables-legacy-save",
    ]);
  });

  it("cleans up in legacy mode without creating a nat table that does not exist", async () => {
    const { runner, calls } = scripted({ cat: tableLists("filter\n", undefined) });
    const backend = createIptablesBackend({ mode: "legacy", runner });
    expect(await backend.cleanup()).toBe(false);
    expect(await backend.verify(ruleset([]))).toBe(true);
    expect(legacyCalls(calls)).toEqual([]);
  });

  it("reads a legacy nat table that exists, and stops looking once it has seen it", async () => {
    const { runner, calls } = scripted({
      cat: tableLists("nat\n", ""),
      "iptables-legacy-save": () => ok(EMPTY_NAT),
      "iptables-legacy-restore": () => ok(),
    });
    const backend = createIptablesBackend({ mode: "legacy", runner });
    await backend.apply(ruleset([family("ipv4", { kind: "inputInterface", name: "cni0" }, [])]));
    await backend.cleanup();
    expect(calls.map((c) => [c.file, ...c.args].join(" "))).toEqual([
      `cat ${LEGACY_TABLE_LISTS.ipv4}`,
      "iptables-legacy-save -t nat",
      `cat ${LEGACY_TABLE_LISTS.ipv6}`,
      "iptables-legacy-restore --noflush -w",
      "iptables-legacy-save -t nat",
      `cat ${LEGACY_TABLE_LISTS.ipv6}`,
    ]);
  });
});
