// Parameters of the benchmarks: defaults for the full report, smaller ones for `--quick`, each
// overridable by a flag (`--changes 20` or `--changes=20`) or an environment variable
// (`BENCH_CHANGES=20`). Lists are comma-separated.

export const BACKENDS = ["nft", "iptables-nft", "iptables-legacy"];
export const PARTS = ["incremental", "controller", "connections", "original", "footprint"];

const FULL = {
  parts: PARTS,
  backends: BACKENDS,
  // Services of 3 ports each (30,000 mappings at 10,000).
  sizes: [100, 1000, 10_000],
  // Single changes per backend and size, after `warmup` unmeasured ones.
  changes: 50,
  warmup: 3,
  // Changes in one burst, spread over `burstWindowMs`.
  burst: 100,
  burstWindowMs: 900,
  // Memory under change: peak RSS over this many of the single changes at the largest size.
  memoryChanges: 40,
  // The controller's flag, at its default: changes closer together are coalesced.
  minSyncPeriod: "1s",
  // Time the controller is left alone before its steady memory is read.
  settleSeconds: 10,
  // Connection rate: Services present in the large case, runs per case, seconds per run.
  connectionServices: 10_000,
  connectionRuns: 5,
  connectionSeconds: 3,
  connectionConcurrency: 32,
  // Services of 1 port for the original controller (with --original-binary) or, without it, its
  // method emulated; the method is quadratic: 1,000 Services take a minute.
  originalSizes: [250, 1000],
  // The iptables variants the original controller runs with, and its single changes.
  originalIptables: ["nft", "legacy"],
  // Single changes per session of the original part and of the footprint.
  originalChanges: 10,
  // Services of 1 port for the footprint: start, memory and size of each program.
  footprintSizes: [100, 1000, 10_000],
};

const QUICK = {
  ...FULL,
  sizes: [100, 1000],
  changes: 10,
  warmup: 2,
  burst: 20,
  memoryChanges: 5,
  settleSeconds: 3,
  connectionServices: 1000,
  connectionRuns: 2,
  connectionSeconds: 1,
  originalSizes: [50, 100],
  originalChanges: 3,
  footprintSizes: [100, 1000],
};

const LISTS = new Set([
  "parts",
  "backends",
  "sizes",
  "originalSizes",
  "originalIptables",
  "footprintSizes",
]);
const WORDS = new Set(["parts", "backends", "originalIptables"]);
const TEXT = new Set(["minSyncPeriod", "out", "render", "originalBinary", "originalVersion"]);
// Yes/no flags (`--image`, `--no-image`); unset, each has its own default.
const FLAGS = new Set(["quick", "readme", "image", "imageArm64"]);

const camel = (flag) => flag.replace(/-([a-z])/g, (_, letter) => letter.toUpperCase());
const envName = (key) => `BENCH_${key.replace(/[A-Z]/g, (letter) => `_${letter}`).toUpperCase()}`;

function convert(key, text) {
  if (LISTS.has(key)) {
    const items = text
      .split(",")
      .map((item) => item.trim())
      .filter(Boolean);
    return WORDS.has(key) ? items : items.map(Number);
  }
  if (TEXT.has(key)) return text;
  const value = Number(text);
  if (!Number.isFinite(value) || value < 0) throw new Error(`${key}: ${text} is not a number`);
  return value;
}

/**
 * Parses `argv` (without node and the script) and the environment into the parameters. Unknown
 * flags are an error, so that a typo never silently runs the full report.
 */
export function parseOptions(argv, env = process.env) {
  const raw = {};
  for (const key of [...Object.keys(FULL), ...TEXT, ...FLAGS]) {
    const value = env[envName(key)];
    if (value !== undefined && value !== "") raw[key] = value;
  }
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i];
    if (!arg.startsWith("--")) throw new Error(`unexpected argument ${arg}`);
    const [name, inline] = arg.slice(2).split(/=(.*)/s);
    if (name.startsWith("no-") && FLAGS.has(camel(name.slice(3)))) {
      raw[camel(name.slice(3))] = "false";
      continue;
    }
    const key = camel(name);
    if (FLAGS.has(key)) {
      raw[key] = inline ?? "true";
    } else if (key in FULL || TEXT.has(key)) {
      const value = inline ?? argv[++i];
      if (value === undefined) throw new Error(`--${name} needs a value`);
      raw[key] = value;
    } else {
      throw new Error(`unknown flag --${name}`);
    }
  }
  const yes = (key) => raw[key] !== undefined && raw[key] !== "false" && raw[key] !== "0";
  const quick = yes("quick");
  const options = { ...(quick ? QUICK : FULL), quick };
  for (const [key, text] of Object.entries(raw)) {
    if (!FLAGS.has(key)) options[key] = convert(key, text);
  }
  // A smoke run, or one of some parts only, leaves the READMEs' figures alone unless asked to.
  options.readme =
    raw.readme === undefined
      ? !quick && PARTS.every((part) => options.parts.includes(part))
      : yes("readme");
  // The footprint builds the image unless told not to, and the arm64 one when it is present.
  options.image = raw.image === undefined || yes("image");
  if (raw.imageArm64 !== undefined) options.imageArm64 = yes("imageArm64");
  for (const part of options.parts) {
    if (!PARTS.includes(part)) throw new Error(`unknown part ${part}; parts: ${PARTS.join(", ")}`);
  }
  for (const backend of options.backends) {
    if (!BACKENDS.includes(backend)) {
      throw new Error(`unknown backend ${backend}; backends: ${BACKENDS.join(", ")}`);
    }
  }
  for (const variant of options.originalIptables) {
    if (variant !== "nft" && variant !== "legacy") {
      throw new Error(`unknown iptables variant ${variant}; variants: nft, legacy`);
    }
  }
  options.sizes = [...options.sizes].sort((a, b) => a - b);
  options.originalSizes = [...options.originalSizes].sort((a, b) => a - b);
  options.footprintSizes = [...options.footprintSizes].sort((a, b) => a - b);
  return options;
}

/** `--backend` and `--iptables-mode` of the controller, and the backend options, for a name. */
export function backendFlags(name) {
  if (name === "nft") return { backend: "nft", args: ["--backend=nft"] };
  const mode = name.slice("iptables-".length);
  return { backend: "iptables", mode, args: ["--backend=iptables", `--iptables-mode=${mode}`] };
}
