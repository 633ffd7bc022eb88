// Network namespaces for the benchmarks, and running a benchmark's measuring half inside one.
//
// A measurement that times kernel tools runs in a process that lives *in* the namespace, so that
// nft and iptables are started exactly as the controller starts them on a node, with no
// `ip netns exec` wrapper around every call.

import { spawn } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";
import { runTool } from "@ipvs-node-controller/backend";
import { cleanUp as cleanUpAll, cleanUpOnSignals, defer, main, stopChild } from "./cleanup.mjs";
import { parseOptions } from "./options.mjs";

let counter = 0;

/** Creates an empty network namespace (loopback up), deleted at cleanup. */
export async function addNamespace(label) {
  const name = `bench-${label}-${process.pid}-${++counter}`;
  const added = await runTool("ip", ["netns", "add", name]);
  if (added.exitCode !== 0) throw new Error(`ip netns add ${name}: ${added.stderr.trim()}`);
  const remove = defer(async () => {
    await runTool("ip", ["netns", "del", name]);
  });
  const up = await runTool("ip", ["-n", name, "link", "set", "lo", "up"]);
  if (up.exitCode !== 0) throw new Error(`ip -n ${name} link set lo up: ${up.stderr.trim()}`);
  return { name, remove };
}

/** A private temporary directory, removed at cleanup. */
export function tempDir(label) {
  const path = mkdtempSync(join(tmpdir(), `bench-${label}-`));
  defer(() => rmSync(path, { recursive: true, force: true }));
  return path;
}

/**
 * Runs the module `scriptUrl` inside `namespace` with `context`, and returns what its
 * {@link insideNamespace} body returned. The child gets a process group of its own, so that
 * stopping it also stops whatever it started.
 */
export async function runInNamespace(namespace, scriptUrl, context, extraEnv = {}) {
  const dir = tempDir("result");
  const resultFile = join(dir, "result.json");
  const child = spawn(
    "ip",
    ["netns", "exec", namespace, process.execPath, fileURLToPath(scriptUrl)],
    {
      stdio: ["ignore", "inherit", "inherit"],
      detached: true,
      env: {
        ...process.env,
        ...extraEnv,
        BENCH_CONTEXT: JSON.stringify({ ...context, resultFile }),
      },
    },
  );
  const stop = defer(() => stopChild(child, { group: true, graceMs: 30_000 }));
  const [code, signal] = await new Promise((resolve, reject) => {
    child.once("error", reject);
    child.once("exit", (...outcome) => resolve(outcome));
  });
  await stop();
  if (code !== 0) {
    throw new Error(`${fileURLToPath(scriptUrl)} in ${namespace} failed (${signal ?? code})`);
  }
  return JSON.parse(readFileSync(resultFile, "utf8"));
}

/** The context this process was started with by {@link runInNamespace}, if any. */
export function namespaceContext() {
  const text = process.env.BENCH_CONTEXT;
  return text === undefined ? undefined : JSON.parse(text);
}

/**
 * The measuring half: runs `body(context)` and hands its result back to {@link runInNamespace};
 * what it started is cleaned up on the way out, on failure and on signals too.
 */
export async function insideNamespace(context, body) {
  cleanUpOnSignals();
  let code = 0;
  try {
    writeFileSync(context.resultFile, JSON.stringify(await body(context)));
  } catch (error) {
    code = 1;
    console.error(error instanceof Error ? (error.stack ?? error.message) : error);
  } finally {
    await cleanUpAll();
  }
  process.exit(code);
}

/**
 * The entry of a benchmark module `moduleUrl`: in a process that {@link runInNamespace} started,
 * runs `inside` (the measuring half; none for a module that never runs in a namespace); run alone
 * (`node bench/NAME.mjs [flags]`), prints the JSON of `alone(options)`; imported, does nothing.
 */
export async function benchmarkEntry(moduleUrl, alone, inside) {
  const context = namespaceContext();
  if (context !== undefined && inside !== undefined) {
    await insideNamespace(context, inside);
  } else if (moduleUrl === pathToFileURL(process.argv[1]).href) {
    await main(async () => {
      const options = parseOptions(process.argv.slice(2));
      console.log(JSON.stringify(await alone(options), null, 2));
    });
  }
}
