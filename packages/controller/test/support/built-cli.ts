/**
 * The built CLI that the process tests run, and the check that it is built from the sources as
 * they are now.
 */
import { existsSync, readdirSync, statSync } from "node:fs";
import { join } from "node:path";
import { fileURLToPath } from "node:url";

const PACKAGES = fileURLToPath(new URL("../../../", import.meta.url));

/**
 * The built CLI, `packages/controller/dist/bin.js`, once it is known to be built from the
 * sources as they are now: every package it loads must have been built after its newest source
 * file. The stamp is `tsc -b`'s own, each package's `tsconfig.tsbuildinfo`, which it rewrites
 * whenever an input is newer. Throws otherwise, naming the newer file: a process test of stale
 * code would prove nothing about this code.
 */
export function builtCli(): string {
  const cli = join(PACKAGES, "controller", "dist", "bin.js");
  const rebuild = "run `pnpm run build` (scripts/setup.sh does) before these tests";
  if (!existsSync(cli)) throw new Error(`packages/controller/dist/bin.js is missing: ${rebuild}`);
  for (const name of readdirSync(PACKAGES)) {
    const src = join(PACKAGES, name, "src");
    if (!existsSync(src)) continue;
    const stamp = join(PACKAGES, name, "tsconfig.tsbuildinfo");
    const built = existsSync(stamp) ? statSync(stamp).mtimeMs : Number.NEGATIVE_INFINITY;
    const inputs = [
      join(PACKAGES, name, "tsconfig.json"),
      ...readdirSync(src, { recursive: true, encoding: "utf8" }).map((file) => join(src, file)),
    ];
    for (const input of inputs) {
      if (statSync(input).mtimeMs > built) {
        const file = input.slice(PACKAGES.length);
        throw new Error(`packages/${name}/dist is older than packages/${file}: ${rebuild}`);
      }
    }
  }
  return cli;
}
