// Watching the kernel of a namespace for the rules of new LB IPs, without listing our whole table
// per check (at 10,000 Services a listing takes longer than the change it would time).
//
// - `nft monitor new rules` prints what every nftables transaction added as it commits.
//   iptables-nft's rules are nftables rules naming the LB IP. The nft backend's mappings are map
//   elements, but nft 1.0.6's monitor cannot print them: each incremental transaction of the
//   backend rewrites its two rules, which reference the map, and the monitor then drops the map
//   from its cache ("Received event for an unknown set"). Those rewritten rules do mark every
//   transaction of the backend, though, with the time it committed: `transactions`.
// - iptables-legacy has no notifications: a poller inside the namespace checks the one expected
//   rule with `iptables-legacy -C`, back to back. With several rules expected at once (a burst)
//   it lists the nat table once per round instead, as checking each one would take longer.

import { createInterface } from "node:readline";
import { CHAINS, dnatRule, tokenize } from "@ipvs-node-controller/backend-iptables";
import { startProcess } from "./cleanup.mjs";
import { sleep } from "./log.mjs";
import { CHANGED_IPS } from "./services.mjs";

/** Resolves with `performance.now()` when `ip`'s rules appear; see {@link Watcher.expect}. */
class Pending {
  constructor() {
    this.waiting = new Map();
  }
  add(key) {
    let resolve;
    const seen = new Promise((done) => {
      resolve = done;
    });
    this.waiting.set(key, resolve);
    return seen;
  }
  see(key, at) {
    const resolve = this.waiting.get(key);
    if (resolve === undefined) return;
    this.waiting.delete(key);
    resolve(at);
  }
}

/** The first rule every transaction of the nft backend adds (see the module comment). */
const NFT_BACKEND_TRANSACTION = /^add rule inet ipvs-node-controller prerouting /;

/**
 * `nft monitor new rules` in `namespace`: `expect(ip)` resolves when a rule naming `ip` is added;
 * `transactions` holds the commit time of each transaction of the nft backend.
 */
export async function nftMonitor(namespace) {
  const monitor = startProcess("ip", [
    "netns",
    "exec",
    namespace,
    "nft",
    "monitor",
    "new",
    "rules",
  ]);
  const pending = new Pending();
  const transactions = [];
  createInterface({ input: monitor.stdout }).on("line", (line) => {
    const at = performance.now();
    if (NFT_BACKEND_TRANSACTION.test(line)) {
      transactions.push(at);
      pending.see(transactions.length - 1, at);
    }
    for (const ip of line.match(CHANGED_IPS) ?? []) pending.see(ip, at);
  });
  // nft subscribes to the kernel's notifications as it starts; it prints nothing until then.
  await sleep(500);
  return {
    kind: "nft monitor new rules",
    expect: (ip) => pending.add(ip),
    transactions,
    /** Resolves with the commit time of transaction `index` (counting from 0) once it happened. */
    transaction: (index) =>
      index < transactions.length ? Promise.resolve(transactions[index]) : pending.add(index),
    stop: () => monitor.stop(),
  };
}

// Runs inside the namespace. Reads one JSON line per expected rule ({ ip, check, line }) and
// prints { ip } when that rule is in the kernel.
const POLLER = `
const { execFile } = require("node:child_process");
const { createInterface } = require("node:readline");
const run = (file, args) => new Promise((done) =>
  execFile(file, args, { maxBuffer: 1 << 30 }, (error, stdout) => done({ ok: !error, stdout })));
const pending = new Map();
let wake = () => {};
createInterface({ input: process.stdin }).on("line", (text) => {
  const rule = JSON.parse(text);
  pending.set(rule.ip, rule);
  wake();
});
const found = (ip, checkMs) => {
  pending.delete(ip);
  process.stdout.write(JSON.stringify({ ip, checkMs }) + "\\n");
};
(async () => {
  for (;;) {
    if (pending.size === 0) await new Promise((done) => { wake = done; });
    const started = performance.now();
    if (pending.size === 1) {
      const [rule] = pending.values();
      const { ok } = await run("iptables-legacy", ["-t", "nat", "-C", ...rule.check]);
      if (ok) found(rule.ip, performance.now() - started);
    } else {
      const { stdout } = await run("iptables-legacy-save", ["-t", "nat"]);
      for (const rule of [...pending.values()]) {
        if (stdout.includes(rule.line)) found(rule.ip, performance.now() - started);
      }
    }
  }
})();
`;

/**
 * The iptables-legacy poller in `namespace`; `expect(ip, mapping)` resolves when the DNAT rule of
 * `mapping` is in the nat table.
 */
export async function legacyPoller(namespace) {
  const poller = startProcess("ip", ["netns", "exec", namespace, process.execPath, "-e", POLLER], {
    stdio: ["pipe", "pipe", "pipe"],
  });
  const pending = new Pending();
  const checkMs = [];
  createInterface({ input: poller.stdout }).on("line", (line) => {
    const found = JSON.parse(line);
    checkMs.push(found.checkMs);
    pending.see(found.ip, performance.now());
  });
  return {
    kind: "iptables-legacy -C of the one rule (a listing per round when several are expected)",
    expect(ip, mapping) {
      const seen = pending.add(ip);
      const rule = dnatRule(mapping);
      poller.stdin.write(
        `${JSON.stringify({ ip, check: [CHAINS.dnat, ...tokenize(rule)], line: `-A ${CHAINS.dnat} ${rule}` })}\n`,
      );
      return seen;
    },
    /** How long the checks that found the rules took: the resolution of the figures. */
    checkMs: () => checkMs,
    stop: () => poller.stop(),
  };
}
