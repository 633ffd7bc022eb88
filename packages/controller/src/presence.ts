/**
 * Which backends have a running controller on this node, so that one instance never removes the
 * rules of another that is still alive (two pods of a rolling update that overlap, or an nft and
 * an iptables instance started by mistake).
 *
 * A running instance holds an abstract Unix socket named after its backend
 * (`@ipvs-node-controller/nft`). Abstract names belong to the network namespace, which every
 * instance on a node shares (hostNetwork), need no file or mount, and are released by the kernel
 * when the process ends, however it ends (SIGKILL and the OOM killer included). Asking whether a
 * backend is alive is connecting to its name. Two instances of one backend cannot both hold it:
 * the second one (the new pod of a rolling update) keeps trying and takes over once the first has
 * gone.
 */
import { createConnection, createServer, type Server, type Socket } from "node:net";

/** The abstract socket name of `backend` (the leading NUL makes it abstract). */
export function presenceName(backend: string): string {
  return `\0ipvs-node-controller/${backend}`;
}

/** Options of {@link holdPresence}. */
export interface PresenceOptions {
  /** How often a name held by another instance is tried again. Default 1 s. */
  readonly retryMs?: number;
  /** Told once when the name is held, and when another instance holds it. */
  readonly onState?: (state: "held" | "waiting") => void;
}

/** A held (or awaited) presence; release it on stop. */
export interface Presence {
  release(): Promise<void>;
}

/** Announces that an instance of `backend` runs here, as long as this process lives. */
export function holdPresence(backend: string, options: PresenceOptions = {}): Presence {
  const retryMs = options.retryMs ?? 1000;
  const peers = new Set<Socket>();
  let server: Server | undefined;
  let released = false;
  let waitingReported = false;
  let timer: NodeJS.Timeout | undefined;

  const attempt = (): void => {
    if (released) return;
    const candidate = createServer((socket) => {
      // Watchers only wait for the close that our exit causes; nothing is ever read or written.
      peers.add(socket);
      socket.on("error", () => {});
      socket.on("close", () => peers.delete(socket));
    });
    candidate.once("error", () => {
      if (!waitingReported) options.onState?.("waiting");
      waitingReported = true;
      timer = setTimeout(attempt, retryMs);
      timer.unref();
    });
    candidate.listen(presenceName(backend), () => {
      if (released) {
        candidate.close();
        return;
      }
      server = candidate;
      options.onState?.("held");
    });
  };
  attempt();

  return {
    async release() {
      released = true;
      if (timer !== undefined) clearTimeout(timer);
      for (const socket of peers) socket.destroy();
      const current = server;
      server = undefined;
      if (current !== undefined) await new Promise((resolve) => current.close(resolve));
    },
  };
}

/**
 * Connects to the instance of `backend`, if one runs: resolves to a socket that closes when that
 * instance ends, or to undefined when none runs.
 */
export function connectToPresence(backend: string): Promise<Socket | undefined> {
  return new Promise((resolve) => {
    const socket = createConnection(presenceName(backend));
    socket.once("connect", () => {
      socket.removeAllListeners("error");
      socket.on("error", () => {});
      resolve(socket);
    });
    socket.once("error", () => {
      socket.destroy();
      resolve(undefined);
    });
  });
}
