// Everything a benchmark creates (namespaces, API servers, controllers, child processes) is
// registered here as it is created and undone in reverse order: at the end of a run, after a
// failure, and on Ctrl-C or SIGTERM, so that no run leaves anything behind on the machine.

import { spawn } from "node:child_process";
import { once } from "node:events";

const undo = [];
let stopping = false;

/** Registers `action` to run at cleanup; returns a function that runs it now, once. */
export function defer(action) {
  const entry = { action, done: false };
  undo.push(entry);
  return async () => {
    if (entry.done) return;
    entry.done = true;
    undo.splice(undo.indexOf(entry), 1);
    await action();
  };
}

let running;

/**
 * Runs every registered action, newest first; failures are reported and do not stop the rest.
 * A second call while one runs (a signal during the normal cleanup) waits for the same one.
 */
export function cleanUp() {
  running ??= (async () => {
    while (undo.length > 0) {
      const entry = undo.pop();
      if (entry.done) continue;
      entry.done = true;
      try {
        await entry.action();
      } catch (error) {
        console.error(`cleanup: ${error instanceof Error ? error.message : error}`);
      }
    }
    running = undefined;
  })();
  return running;
}

/**
 * Cleans up on SIGINT, SIGTERM and SIGHUP, then exits. A second signal exits at once (the
 * namespaces' own exit hooks still remove them).
 */
export function cleanUpOnSignals() {
  for (const [signal, number] of [
    ["SIGINT", 2],
    ["SIGTERM", 15],
    ["SIGHUP", 1],
  ]) {
    process.on(signal, () => {
      if (stopping) process.exit(128 + number);
      stopping = true;
      console.error(`\n${signal}: cleaning up`);
      // The interrupted work fails as its processes go away; that must not cut the cleanup short.
      process.on("uncaughtException", () => {});
      process.on("unhandledRejection", () => {});
      void cleanUp().finally(() => process.exit(128 + number));
    });
  }
}

/** Runs `main`, then cleans up whatever happened; the process exits 1 on failure. */
export async function main(body) {
  cleanUpOnSignals();
  let failed = false;
  try {
    await body();
  } catch (error) {
    failed = true;
    console.error(error instanceof Error ? (error.stack ?? error.message) : error);
  } finally {
    await cleanUp();
  }
  process.exit(failed ? 1 : 0);
}

const alive = (child) => child.exitCode === null && child.signalCode === null;

/**
 * Stops a child: SIGTERM, then SIGKILL after `graceMs`. With `group`, the SIGKILL goes to the
 * child's whole process group (it was started detached), which reaches what it started in turn.
 */
export async function stopChild(child, { graceMs = 10_000, group = false } = {}) {
  if (child.pid === undefined) return;
  if (alive(child)) {
    const exited = once(child, "exit");
    child.kill("SIGTERM");
    const timer = setTimeout(() => kill(child, group), graceMs);
    await exited;
    clearTimeout(timer);
  }
  if (group) kill(child, true);
}

function kill(child, group) {
  try {
    process.kill(group ? -child.pid : child.pid, "SIGKILL");
  } catch {
    // Already gone.
  }
}

/** Starts a long-lived process that is stopped at cleanup unless it has ended by then. */
export function startProcess(file, args, options = {}) {
  const child = spawn(file, args, { stdio: ["ignore", "pipe", "pipe"], ...options });
  const stop = defer(() => stopChild(child, { group: options.detached === true }));
  child.stop = stop;
  child.exited = once(child, "exit").then(([code, signal]) => ({ code, signal }));
  child.on("error", () => {});
  return child;
}
