/**
 * Services files in JSON take JSON.parse's fast path and read exactly as the YAML parser reads
 * them; what only YAML can read still goes to the YAML parser.
 */
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { hostileServiceSet } from "@ipvs-node-controller/test-support";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { parseAllDocuments } from "yaml";
import { readServicesFile } from "../src/input-files.js";

describe("readServicesFile with JSON", () => {
  let dir: string;
  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), "input-json-"));
  });
  afterAll(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it("reads a large hostile List exactly as the YAML parser does", async () => {
    const { services } = hostileServiceSet({ good: 200, bad: 100 });
    const text = `\n  ${JSON.stringify({ apiVersion: "v1", kind: "List", items: services }, null, 1)}\n`;
    const file = join(dir, "list.json");
    await writeFile(file, text);
    const [document] = parseAllDocuments(text);
    const listed = document?.toJS() as { items: unknown[] } | undefined;
    const viaYaml = (listed?.items ?? []).filter(
      (item) => item !== null && typeof item === "object",
    );
    expect(viaYaml).toHaveLength(services.length);
    expect(await readServicesFile(file)).toEqual(viaYaml);
  });

  it("leaves YAML in flow style, and JSON followed by a comment, to the YAML parser", async () => {
    const flow = join(dir, "flow.yaml");
    await writeFile(flow, "{kind: Service, metadata: {name: flow}}\n");
    expect((await readServicesFile(flow)).map((s) => s.metadata?.name)).toEqual(["flow"]);
    const commented = join(dir, "commented.json");
    await writeFile(commented, '{"kind": "Service", "metadata": {"name": "c"}} # kubectl\n');
    expect((await readServicesFile(commented)).map((s) => s.metadata?.name)).toEqual(["c"]);
  });
});
