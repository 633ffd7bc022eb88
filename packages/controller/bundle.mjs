// Bundles the `ipvs-node-controller` CLI into bundle/: the entry `ipvs-node-controller.mjs` and
// the chunks it loads on demand (everything but `run` is a dynamic import, so `run` never loads
// `render`'s or `doctor`'s code), each with a linked source map. This is the program the image
// ships and the tests run; dist/ stays the library build.
//
// Why a bundle: Node.js loads one file faster and keeps less of it than a tree of node_modules,
// and the image needs no node_modules at all. Why esbuild: it bundles TypeScript and ESM as they
// are, splits on dynamic imports, and takes a second.
//
//   node bundle.mjs          # from packages/controller; `pnpm build` runs it
import { readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { build } from "esbuild";

const PACKAGE = dirname(fileURLToPath(import.meta.url));
export const BUNDLE_DIR = join(PACKAGE, "bundle");

/**
 * @kubernetes/client-node's modules are free of side effects but do not say so: without this, the
 * generated models of every API group (about 0.9 MB) are kept because the kubeconfig module
 * imports the generated index for two helpers.
 */
const kubernetesClientIsPure = {
  name: "kubernetes-client-is-pure",
  setup(context) {
    context.onResolve({ filter: /.*/ }, async (args) => {
      if (args.pluginData?.resolving) return undefined;
      if (!/@kubernetes[/+]client-node/.test(`${args.importer} ${args.path}`)) return undefined;
      const resolved = await context.resolve(args.path, {
        kind: args.kind,
        importer: args.importer,
        resolveDir: args.resolveDir,
        pluginData: { resolving: true },
      });
      return /@kubernetes[/+]client-node\/dist\//.test(resolved.path)
        ? { ...resolved, sideEffects: false }
        : resolved;
    });
  },
};

/**
 * node-fetch (a dependency of the Kubernetes client) falls back to the `whatwg-url` package where
 * a runtime has no WHATWG URL; Node.js has one. The package's Unicode tables (`tr46`) would
 * otherwise be loaded at start.
 */
const nodeUrl = {
  name: "node-url",
  setup(context) {
    context.onResolve({ filter: /^whatwg-url$/ }, () => ({
      path: "whatwg-url",
      namespace: "node-url",
    }));
    context.onLoad({ filter: /.*/, namespace: "node-url" }, () => ({
      contents:
        "export const { URL, URLSearchParams } = globalThis; export default { URL, URLSearchParams };",
      loader: "js",
    }));
  },
};

rmSync(BUNDLE_DIR, { recursive: true, force: true });
const result = await build({
  entryPoints: { "ipvs-node-controller": join(PACKAGE, "src/bin.ts") },
  outdir: BUNDLE_DIR,
  outExtension: { ".js": ".mjs" },
  chunkNames: "[name]-[hash]",
  bundle: true,
  splitting: true,
  format: "esm",
  platform: "node",
  target: "node20.19",
  // The workspace packages are bundled from their TypeScript sources.
  conditions: ["source"],
  minify: true,
  // Class and function names stay readable in logs and stack traces.
  keepNames: true,
  sourcemap: "linked",
  legalComments: "linked",
  metafile: true,
  plugins: [kubernetesClientIsPure, nodeUrl],
  // Some dependencies are CommonJS and call require() for Node.js' own modules.
  banner: {
    js: "import { createRequire as __createRequire } from 'node:module'; const require = __createRequire(import.meta.url);",
  },
  // The version `--version` prints: the bundle runs without the package's package.json.
  define: {
    IPVS_NODE_CONTROLLER_VERSION: JSON.stringify(
      JSON.parse(readFileSync(join(PACKAGE, "package.json"), "utf8")).version,
    ),
  },
  logLevel: "warning",
});
writeFileSync(join(BUNDLE_DIR, "meta.json"), JSON.stringify(result.metafile));
writeFileSync(join(BUNDLE_DIR, "THIRD-PARTY-LICENSES.txt"), thirdPartyLicenses(result.metafile));

/**
 * The licence of every npm package the bundle holds code of, with its name and version: minifying
 * drops the notices from the code, and most licences (MIT, ISC, BSD, Apache-2.0) ask that they
 * travel with every copy.
 */
function thirdPartyLicenses(metafile) {
  const roots = new Set();
  for (const input of Object.keys(metafile.inputs)) {
    const match = /^(.*node_modules\/(?:@[^/]+\/)?[^/]+)\//.exec(input);
    if (match) roots.add(match[1]);
  }
  const sections = [...roots]
    .map((root) => {
      const manifest = JSON.parse(readFileSync(join(root, "package.json"), "utf8"));
      const file = readdirSync(root).find((name) => /^(licen[cs]e|copying)(\.|$)/i.test(name));
      const text = file
        ? readFileSync(join(root, file), "utf8").trim()
        : `(no licence file; package.json says ${JSON.stringify(manifest.license)})`;
      return { name: `${manifest.name}@${manifest.version}`, license: manifest.license, text };
    })
    .sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
  const rule = "-".repeat(80);
  return `${sections
    .map(({ name, license, text }) => `${rule}\n${name} (${license})\n\n${text}\n`)
    .join("\n")}`;
}
