/**
 * The conntrack cleaner with a scripted `conntrack`: the commands it runs, the entries it
 * counts, and failures that are counted and logged but never thrown. udp-flows.test.ts proves
 * the same on the kernel with real traffic.
 */

import type { CommandResult, CommandRunner } from "@ipvs-node-controller/backend";
import type { UdpDestination } from "@ipvs-node-controller/core";
import pino from "pino";
import { Registry } from "prom-client";
import { describe, expect, it } from "vitest";
import { createConntrackCleaner, destinationsWithFlows } from "../src/index.js";

const LISTING = `udp      17 29 src=10.244.1.2 dst=192.0.2.53 sport=40000 dport=53 [UNREPLIED] src=192.0.2.53 dst=10.244.1.2 sport=53 dport=40000 mark=0 use=1
udp      17 25 src=10.244.1.2 dst=192.0.2.54 sport=40001 dport=53 src=10.96.0.55 dst=10.244.1.2 sport=53 dport=40001 mark=0 use=1
udp      17 25 src=fd00:10:244:1::2 dst=2001:db8::53 sport=40002 dport=53 src=fd00:10:96::53 dst=fd00:10:244:1::2 sport=53 dport=40002 mark=0 use=1
`;

const v4 = (ip: string, port = 53): UdpDestination => ({ family: "ipv4", ip, port });

function scripted(answer: (args: readonly string[], input?: string) => CommandResult) {
  const calls: { args: readonly string[]; input?: string }[] = [];
  const runner: CommandRunner = async (_file, args, options) => {
    calls.push({ args, input: options?.input });
    return answer(args, options?.input);
  };
  return { runner, calls };
}

describe("destinationsWithFlows", () => {
  it("keeps the wanted destinations that are the original destination of an entry", () => {
    expect(
      destinationsWithFlows(LISTING, "ipv4", [
        v4("192.0.2.53"),
        v4("192.0.2.53", 54),
        v4("10.96.0.55"),
      ]),
    ).toEqual([v4("192.0.2.53")]);
    expect(
      destinationsWithFlows(LISTING, "ipv6", [{ family: "ipv6", ip: "2001:db8::53", port: 53 }]),
    ).toEqual([{ family: "ipv6", ip: "2001:db8::53", port: 53 }]);
  });
});

describe("createConntrackCleaner", () => {
  const log = pino({ level: "silent" });

  it("deletes a few destinations directly, one family per run, and counts the entries", async () => {
    const { runner, calls } = scripted((args) =>
      args[0] === "--load-file"
        ? { stdout: LISTING.split("\n")[0] ?? "", stderr: "", exitCode: 0 }
        : { stdout: "", stderr: "", exitCode: 1 },
    );
    const registry = new Registry();
    await createConntrackCleaner({ runner, log, registry }).flush([
      v4("192.0.2.53"),
      { family: "ipv6", ip: "2001:db8::53", port: 53 },
    ]);
    expect(calls).toEqual([
      { args: ["--load-file", "-"], input: "-D -p udp -f ipv4 --orig-dst 192.0.2.53 --dport 53\n" },
      {
        args: ["--load-file", "-"],
        input: "-D -p udp -f ipv6 --orig-dst 2001:db8::53 --dport 53\n",
      },
    ]);
    expect(await registry.metrics()).toMatch(/conntrack_deleted_entries_total 2/);
  });

  it("lists first when there are many, and deletes only destinations with flows", async () => {
    const { runner, calls } = scripted((args) =>
      args[0] === "-L"
        ? { stdout: LISTING, stderr: "", exitCode: 0 }
        : { stdout: "", stderr: "", exitCode: 0 },
    );
    const many = Array.from({ length: 40 }, (_, i) => v4(`198.18.0.${i}`));
    await createConntrackCleaner({ runner, log, registry: new Registry() }).flush([
      ...many,
      v4("192.0.2.53"),
    ]);
    expect(calls.map((call) => call.args)).toEqual([
      ["-L", "-p", "udp", "-f", "ipv4"],
      ["--load-file", "-"],
    ]);
    expect(calls[1]?.input).toBe("-D -p udp -f ipv4 --orig-dst 192.0.2.53 --dport 53\n");
  });

  it("does nothing for nothing", async () => {
    const { runner, calls } = scripted(() => ({ stdout: "", stderr: "", exitCode: 0 }));
    await createConntrackCleaner({ runner, log, registry: new Registry() }).flush([]);
    expect(calls).toEqual([]);
  });

  it("counts and logs a failure instead of throwing, and still tries the other family", async () => {
    const messages: string[] = [];
    const logged = pino({ level: "warn" }, { write: (line: string) => messages.push(line) });
    let runs = 0;
    const runner: CommandRunner = async () => {
      runs += 1;
      if (runs === 1) throw new Error("conntrack could not be started: ENOENT");
      return { stdout: "", stderr: "conntrack: operation failed", exitCode: 1 };
    };
    const registry = new Registry();
    await createConntrackCleaner({ runner, log: logged, registry }).flush([
      v4("192.0.2.53"),
      { family: "ipv6", ip: "2001:db8::53", port: 53 },
    ]);
    expect(runs).toBe(2);
    expect(await registry.metrics()).toMatch(/conntrack_failures_total 2/);
    expect(messages).toHaveLength(2);
    expect(messages.join("")).toMatch(/could not delete conntrack entries/);
  });
});
