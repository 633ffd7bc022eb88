/**
 * The live heap of a Node.js process, measured exactly: a full garbage collection through the
 * inspector protocol, then the heap's used size. Unlike resident memory or a heap figure read at a
 * random moment, the result does not depend on when the collector last ran, so two measurements
 * taken at different times compare what the process really keeps.
 *
 * The process must run with `--inspect=127.0.0.1:PORT` (in the same network namespace as
 * `runner`).
 */
import type { CommandRunner } from "@ipvs-node-controller/backend";

/** Live heap after a full collection. */
export interface LiveHeap {
  readonly usedBytes: number;
  readonly totalBytes: number;
}

// Runs next to the inspected process: one WebSocket session, two calls.
const PROGRAM = `
const port = process.argv[1];
(async () => {
  const targets = await (await fetch("http://127.0.0.1:" + port + "/json/list")).json();
  const ws = new WebSocket(targets[0].webSocketDebuggerUrl);
  const pending = new Map();
  let id = 0;
  ws.onmessage = (message) => {
    const answer = JSON.parse(message.data);
    pending.get(answer.id)?.(answer);
  };
  await new Promise((resolve, reject) => { ws.onopen = resolve; ws.onerror = reject; });
  const call = (method) => new Promise((resolve) => {
    id += 1;
    pending.set(id, resolve);
    ws.send(JSON.stringify({ id, method }));
  });
  await call("HeapProfiler.collectGarbage");
  const usage = await call("Runtime.getHeapUsage");
  process.stdout.write(JSON.stringify(usage.result));
  ws.close();
})().catch((error) => { process.stderr.write(String(error && error.stack || error)); process.exit(1); });
`;

/** Collects garbage in the process listening for the inspector on `port`, then reads its heap. */
export async function measureLiveHeap(runner: CommandRunner, port: number): Promise<LiveHeap> {
  // Node.js 20 has the WebSocket client behind a flag; later versions have it by default.
  const flags =
    typeof (globalThis as { WebSocket?: unknown }).WebSocket === "function"
      ? []
      : ["--experimental-websocket"];
  const result = await runner(process.execPath, [...flags, "-e", PROGRAM, String(port)]);
  if (result.exitCode !== 0) {
    throw new Error(`measuring the heap failed: ${result.stderr.trim()}`);
  }
  const usage = JSON.parse(result.stdout) as { usedSize: number; totalSize: number };
  return { usedBytes: usage.usedSize, totalBytes: usage.totalSize };
}
