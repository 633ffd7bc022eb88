/**
 * `doctor`'s command line without a kernel: usage errors exit 2 before anything is read, and an
 * unreadable input exits 1 with one line.
 */
import { describe, expect, it } from "vitest";
import { main } from "../../src/cli.js";

async function cli(...argv: string[]) {
  const out: string[] = [];
  const err: string[] = [];
  const code = await main(argv, { out: (text) => out.push(text), err: (text) => err.push(text) });
  return { code, out: out.join("\n"), err: err.join("\n") };
}

describe("ipvs-node-controller doctor, usage", () => {
  it.each([
    [["doctor"], /--node-name \(or NODE_NAME\) is required to read from the API/],
    [["doctor", "--node", "node.yaml", "--node-name", "n"], /--node needs --services/],
    [["doctor", "--services", "s.yaml", "--kubeconfig", "k"], /--services and --kubeconfig/],
    [["doctor", "--services", "s.yaml", "--output", "yaml"], /--output/],
    [["doctor", "--services", "s.yaml", "--probe-timeout", "soon"], /--probe-timeout: "soon"/],
    [["doctor", "--services", "s.yaml", "--net-stack", "ipv5"], /"ipv5"/],
    [["doctor", "--services", "s.yaml", "--backend", "pf"], /--backend/],
  ])("%j exits 2 with one line", async (argv, message) => {
    const previous = process.env.NODE_NAME;
    delete process.env.NODE_NAME;
    try {
      const { code, out, err } = await cli(...argv);
      expect(code).toBe(2);
      expect(out).toBe("");
      expect(err.split("\n")).toHaveLength(1);
      expect(err).toMatch(message);
    } finally {
      if (previous !== undefined) process.env.NODE_NAME = previous;
    }
  });

  it("exits 1 with one line for a Services file it cannot read", async () => {
    const { code, out, err } = await cli("doctor", "--services", "/nonexistent/services.yaml");
    expect(code).toBe(1);
    expect(out).toBe("");
    expect(err).toMatch(/^error: cannot read \/nonexistent\/services\.yaml/);
  });

  it("lists its flags in --help", async () => {
    const { code, out } = await cli("doctor", "--help");
    expect(code).toBe(0);
    for (const flag of ["--probe", "--probe-timeout", "--output", "--services", "--node-name"]) {
      expect(out).toContain(flag);
    }
  });
});
