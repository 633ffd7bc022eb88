// Watching the kernel of a namespace for the rules of new LB IPs, without listing our whole table
// per check (at 10,000 Services a listing takes longer than the change it would time).
//
// - `nft monitor` prints what every nftables transaction added as it commits: the nft backend's
//   map elements, and iptables-nft's rules (nftables rules naming the LB IP).
//   The monitor only keeps up with transactions of a few objects: one that rewrites 30,000 rules
//   overflows its socket (events are lost) and slows the writer down by half.
// - iptables-legacy has no notifications: a poller inside the namespace checks the one expected
//   rule with `iptables-legacy -C`, back to back. With several rules expected at once (a burst)
//   it lists the nat table once per round instead, as checking each one would take longer. A
//   check copies the whole table out of the kernel (50 ms at 30,000 rules), so its duration is
//   the resolution of the figure: `checkMs`.
// - iptables-nft while the backend rewrites every rule per change: the monitor would overflow
//   and an `iptables-nft -C` reads the whole table (0.65 s at 30,000 rules), each slowing down the
//   very sync it times by 2-3 times. The controller logs "rules applied" as its transaction ends;
//   each such line is confirmed in the kernel by one check (or one listing for a burst) after
//   the sync, and the line's arrival is the time.

import { createInterface } from "node:readline";
import {
  bucketChain,
  bucketOf,
  dnatKey,
  dnatRule,
  tokenize,
} from "@ipvs-node-controller/backend-iptables";
import { runnerIn } from "@ipvs-node-controller/test-support";
import { startProcess } from "./cleanup.mjs";
import { sleep } from "./log.mjs";
import { CHANGED_IPS } from "./services.mjs";

/** The chain holding a mapping's DNAT rule: the bucket of its external IP's last byte. */
const chainOf = (mapping) => bucketChain(bucketOf(dnatKey(mapping)));

/**
 * Resolves with `performance.now()` when `ip`'s rules appear (after `times` sightings); see
 * {@link Watcher.expect}.
 */
class Pending {
  constructor() {
    this.waiting = new Map();
  }
  add(key, times = 1) {
    let resolve;
    const seen = new Promise((done) => {
      resolve = done;
    });
    this.waiting.set(key, { resolve, left: times });
    return seen;
  }
  see(key, at) {
    const entry = this.waiting.get(key);
    if (entry === undefined || --entry.left > 0) return;
    this.waiting.delete(key);
    entry.resolve(at);
  }
}

/**
 * `nft monitor` in `namespace`: `expect(ip)` resolves when an element or a rule naming `ip` is
 * added; with `lines` and `matching`, once `lines` added objects naming `ip` and `matching` that
 * line (e.g. the original controller's two DNAT rules of an IP, among its mark rules).
 */
export async function nftMonitor(namespace, { lines = 1, matching = () => true } = {}) {
  const monitor = startProcess("ip", ["netns", "exec", namespace, "nft", "monitor"]);
  const pending = new Pending();
  createInterface({ input: monitor.stdout }).on("line", (line) => {
    const at = performance.now();
    // Only additions: a deletion names the LB IP a Service moves away from.
    if (!line.startsWith("add ") || !matching(line)) return;
    for (const ip of new Set(line.match(CHANGED_IPS) ?? [])) pending.see(ip, at);
  });
  // nft subscribes to the kernel's notifications as it starts; it prints nothing until then.
  await sleep(500);
  return {
    kind: "nft monitor",
    expect: (ip) => pending.add(ip, lines),
    stop: () => monitor.stop(),
  };
}

// Runs inside the namespace. Reads one JSON line per expected rule ({ ip, check, line }) and
// prints { ip, checkMs } when that rule is in the kernel.
const POLLER = `
const [iptables, save] = JSON.parse(process.argv[1]);
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
      const { ok } = await run(iptables, ["-t", "nat", "-C", ...rule.check]);
      if (ok) found(rule.ip, performance.now() - started);
    } else {
      const { stdout } = await run(save, ["-t", "nat"]);
      for (const rule of [...pending.values()]) {
        if (stdout.includes(rule.line)) found(rule.ip, performance.now() - started);
      }
    }
  }
})();
`;

/**
 * The poller of `variant` (`legacy` or `nft`) in `namespace`; `expect(ip, mapping)` resolves
 * when the DNAT rule of `mapping` is in the nat table.
 */
export async function rulePoller(namespace, variant) {
  const tools = [`iptables-${variant}`, `iptables-${variant}-save`];
  const poller = startProcess(
    "ip",
    ["netns", "exec", namespace, process.execPath, "-e", POLLER, JSON.stringify(tools)],
    { stdio: ["pipe", "pipe", "pipe"] },
  );
  const pending = new Pending();
  const checkMs = [];
  createInterface({ input: poller.stdout }).on("line", (line) => {
    const found = JSON.parse(line);
    checkMs.push(found.checkMs);
    pending.see(found.ip, performance.now());
  });
  return {
    kind: `iptables-${variant} -C of the one rule (a listing per round when several are expected)`,
    expect(ip, mapping) {
      const seen = pending.add(ip);
      const rule = dnatRule(mapping);
      poller.stdin.write(
        `${JSON.stringify({ ip, check: [chainOf(mapping), ...tokenize(rule)], line: `-A ${chainOf(mapping)} ${rule}` })}\n`,
      );
      return seen;
    },
    /** How long the checks that found the rules took: the resolution of the figures. */
    checkMs: () => checkMs,
    stop: () => poller.stop(),
  };
}

/**
 * Times rules by the controller's "rules applied" lines (the session calls `synced(at)` for each),
 * each confirmed in the kernel of `namespace` with iptables-`variant` once the sync is over.
 */
export function syncChecker(namespace, variant) {
  const run = runnerIn(namespace);
  const pending = new Map();
  let checks = Promise.resolve();
  const confirm = async (at) => {
    const rules = [...pending.values()];
    if (rules.length === 0) return;
    const present =
      rules.length === 1
        ? (await run(`iptables-${variant}`, ["-t", "nat", "-C", ...rules[0].check])).exitCode === 0
          ? rules
          : []
        : await run(`iptables-${variant}-save`, ["-t", "nat"]).then(({ stdout }) =>
            rules.filter((rule) => stdout.includes(rule.line)),
          );
    for (const rule of present) {
      pending.delete(rule.ip);
      rule.resolve(at);
    }
  };
  return {
    kind: `the controller's "rules applied", each confirmed by iptables-${variant} -C (or a listing)`,
    expect(ip, mapping) {
      const rule = dnatRule(mapping);
      return new Promise((resolve) => {
        pending.set(ip, {
          ip,
          resolve,
          check: [chainOf(mapping), ...tokenize(rule)],
          line: `-A ${chainOf(mapping)} ${rule}`,
        });
      });
    },
    synced(at) {
      checks = checks.then(() => confirm(at)).catch(() => {});
    },
    stop: async () => {},
  };
}
