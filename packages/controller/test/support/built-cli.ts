/**
 * The bundled CLI that the process tests run, as the image ships it, and the check that it is
 * bundled from the sources as they are now.
 */
import { existsSync, readdirSync, statSync } from "node:fs";
import { join } from "node:path";
import { fileURLToPath } from "node:url";

const PACKAGES = fileURLToPath(new URL("../../../", import.meta.url));

/**
 * The bundled CLI, `packages/controller/bundle/ipvs-node-controller.mjs`, once it is known to be
 * bundled from the sources as they are now: its build's metafile must be newer than every source
 * file of every package (the bundle is made from their TypeScript sources) and than the bundling
 * script. Throws otherwise, naming the newer file: a process test of stale code would prove
 * nothing about this code.
 */
export function builtCli(): string {
  const bundle = join(PACKAGES, "controller", "bundle");
  const cli = join(bundle, "ipvs-node-controller.mjs");
  const stamp = join(bundle, "meta.json");
  const rebuild = "run `pnpm run build` (scripts/setup.sh does) before these tests";
  if (!existsSync(cli) || !existsSync(stamp)) {
    throw new Error(`packages/controller/bundle/ is missing: ${rebuild}`);
  }
  const built = statSync(stamp).mtimeMs;
  const inputs = [join(PACKAGES, "controller", "bundle.mjs")];
  for (const name of readdirSync(PACKAGES)) {
    const src = join(PACKAGES, name, "src");
    if (!existsSync(src)) continue;
    for (const file of readdirSync(src, { recursive: true, encoding: "utf8" })) {
      inputs.push(join(src, file));
    }
  }
  for (const input of inputs) {
    const info = statSync(input);
    if (info.isFile() && info.mtimeMs > built) {
      const file = input.slice(PACKAGES.length);
      throw new Error(`packages/controller/bundle/ is older than packages/${file}: ${rebuild}`);
    }
  }
  return cli;
}
