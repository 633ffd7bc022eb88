/**
 * Makes a TCP server of the host reachable from inside a network namespace without giving either
 * side a new address: a forwarder in the namespace listens on `127.0.0.1:<port>` and relays each
 * connection through a Unix socket (file-system sockets cross network namespaces) to a relay in
 * the host namespace, which connects to the real server. TLS passes through untouched, so a
 * certificate issued for 127.0.0.1 stays valid.
 */
import { mkdtempSync, rmSync } from "node:fs";
import { createConnection, createServer, type Server, type Socket } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { execa } from "execa";

/** A running bridge. */
export interface TcpBridge {
  /** Stops both ends and removes the socket file. Idempotent. */
  stop(): Promise<void>;
}

// Runs inside the namespace: TCP listener on 127.0.0.1:port -> Unix socket.
const FORWARDER = `
const net = require("node:net");
const [port, path] = [Number(process.argv[1]), process.argv[2]];
const server = net.createServer((client) => {
  const upstream = net.createConnection(path);
  client.pipe(upstream).pipe(client);
  const close = () => { client.destroy(); upstream.destroy(); };
  client.on("error", close); upstream.on("error", close); client.on("close", close); upstream.on("close", close);
});
server.listen(port, "127.0.0.1", () => process.stdout.write("ready\\n"));
`;

function pipeBoth(a: Socket, b: Socket): void {
  a.pipe(b).pipe(a);
  const close = () => {
    a.destroy();
    b.destroy();
  };
  for (const socket of [a, b]) {
    socket.on("error", close);
    socket.on("close", close);
  }
}

/**
 * Bridges `127.0.0.1:port` inside `namespace` to `target` in the current namespace.
 * The same port number is used on both sides, so one kubeconfig works in both.
 */
export async function bridgeIntoNamespace(
  namespace: string,
  target: { host: string; port: number },
): Promise<TcpBridge> {
  const dir = mkdtempSync(join(tmpdir(), "tcp-bridge-"));
  const path = join(dir, "socket");
  const sockets = new Set<Socket>();
  const relay: Server = createServer((incoming) => {
    const upstream = createConnection(target.port, target.host);
    sockets.add(incoming).add(upstream);
    incoming.on("close", () => sockets.delete(incoming));
    upstream.on("close", () => sockets.delete(upstream));
    pipeBoth(incoming, upstream);
  });
  await new Promise<void>((resolve, reject) => {
    relay.once("error", reject);
    relay.listen(path, resolve);
  });

  const forwarder = execa(
    "ip",
    ["netns", "exec", namespace, process.execPath, "-e", FORWARDER, String(target.port), path],
    { reject: false, stdin: "ignore", buffer: false },
  );
  await new Promise<void>((resolve, reject) => {
    forwarder.stdout?.once("data", () => resolve());
    void forwarder.then((result) =>
      reject(new Error(`bridge forwarder exited: ${result.stderr ?? ""}`)),
    );
  });

  let stopped = false;
  return {
    async stop() {
      if (stopped) return;
      stopped = true;
      forwarder.kill("SIGKILL");
      await forwarder;
      for (const socket of sockets) socket.destroy();
      await new Promise<void>((resolve) => relay.close(() => resolve()));
      rmSync(dir, { recursive: true, force: true });
    },
  };
}
