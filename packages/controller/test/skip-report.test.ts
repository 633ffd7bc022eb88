/**
 * One report line per skipped Service and per pair of conflicting Services, however many of their
 * addresses and ports are concerned: a hostile object cannot flood the log.
 */
import { computeRuleset } from "@ipvs-node-controller/core";
import { describe, expect, it } from "vitest";
import { reportDiagnostics } from "../src/oneshot.js";
import { describeSkips, groupSkips, MAX_DETAILS } from "../src/skip-report.js";

const lb = (namespace: string, name: string, spec: Record<string, unknown>, created: string) => ({
  metadata: { namespace, name, creationTimestamp: created },
  spec: { type: "LoadBalancer", clusterIP: "10.96.0.1", ...spec },
  status: { loadBalancer: { ingress: [{ ip: "192.0.2.1" }] } },
});

describe("skip reports", () => {
  it("names a Service with 10,000 bad ports once, with its reasons, examples and count", () => {
    const result = computeRuleset({
      services: [
        lb(
          "default",
          "flood",
          { ports: Array.from({ length: 10_000 }, (_, i) => ({ port: 70_000 + i })) },
          "2024-01-01T00:00:00Z",
        ),
      ],
    });
    expect(result.skipped).toHaveLength(10_001);
    const lines: string[] = [];
    reportDiagnostics(result, (line) => {
      if (!line.startsWith("warning:")) lines.push(line);
    });
    expect(lines).toHaveLength(1);
    expect(lines[0]).toMatch(
      /^skipped default\/flood: InvalidPort, NoPorts: spec\.ports\[0\]: port 70000 is not .*\(10001 problems\)$/,
    );
    expect(groupSkips(result.skipped)[0]?.details).toHaveLength(MAX_DETAILS);
  });

  it("keeps the one-entry line as it was", () => {
    const result = computeRuleset({
      services: [
        lb("shop", "broken", { clusterIP: 42, ports: [{ port: 80 }] }, "2024-01-01T00:00:00Z"),
      ],
    });
    const [group] = groupSkips(result.skipped);
    expect(group?.reasons).toEqual(["InvalidIP", "NoClusterIP"]);
    expect(
      describeSkips({ service: "a/b", reasons: ["InvalidIP"], details: ["x"], count: 1 }),
    ).toBe("InvalidIP: x");
  });

  it("reports the ports one Service loses to another as one conflict line", () => {
    const ports = Array.from({ length: 100 }, (_, i) => ({ port: i + 1 }));
    const result = computeRuleset({
      services: [
        lb("ns-a", "x", { ports }, "2024-01-01T00:00:00Z"),
        lb("ns-b", "x", { ports, clusterIP: "10.96.0.2" }, "2024-02-01T00:00:00Z"),
      ],
    });
    expect(result.conflicts).toHaveLength(100);
    const lines: string[] = [];
    reportDiagnostics(result, (line) => {
      if (!line.startsWith("warning:")) lines.push(line);
    });
    expect(lines).toEqual([
      expect.stringMatching(/^skipped ns-b\/x: Conflict: .* \(100 problems\)$/),
      "conflict 192.0.2.1 tcp/1 and 99 more: ns-a/x wins over ns-b/x",
    ]);
  });
});
