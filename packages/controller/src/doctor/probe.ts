/**
 * A TCP connection from this host, as any host-network process would open one: it passes the nat
 * output hook, where our rules translate traffic that starts on the node.
 */
import { connect } from "node:net";
import type { ProbeOutcome } from "./schema.js";

/**
 * Connects to `ip:port` and closes again at once: `ok` when the handshake completed, `refused`
 * (a reset: nothing listens, e.g. an IPVS virtual server without endpoints), `timeout` when
 * nothing answered within `timeoutMs`, `error` with the system's code otherwise. Never throws.
 */
export function probeTcp(ip: string, port: number, timeoutMs: number): Promise<ProbeOutcome> {
  return new Promise((resolve) => {
    const socket = connect({ host: ip, port });
    const done = (outcome: ProbeOutcome) => {
      clearTimeout(timer);
      socket.destroy();
      resolve(outcome);
    };
    const timer = setTimeout(() => done({ result: "timeout" }), timeoutMs);
    socket.once("connect", () => done({ result: "ok" }));
    socket.once("error", (error: NodeJS.ErrnoException) =>
      done(
        error.code === "ECONNREFUSED"
          ? { result: "refused" }
          : { result: "error", detail: error.code ?? error.message },
      ),
    );
  });
}

/** Runs `work` on every item, at most `limit` at a time; results in the order of `items`. */
export async function mapLimited<T, R>(
  items: readonly T[],
  limit: number,
  work: (item: T) => Promise<R>,
): Promise<R[]> {
  const results: R[] = new Array(items.length);
  let next = 0;
  const worker = async () => {
    while (next < items.length) {
      const index = next++;
      results[index] = await work(items[index] as T);
    }
  };
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, worker));
  return results;
}
