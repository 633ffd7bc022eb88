/**
 * Reading our part of the nat table back from `iptables-save -t nat` output.
 *
 * Only two things belong to us: chains whose name starts with {@link CHAIN_PREFIX}, and rules in
 * other chains that jump (`-j`/`-g`) into one of them. Everything else is skipped unread.
 */

/** Every chain this backend creates starts with this prefix (and nothing else of ours exists). */
export const CHAIN_PREFIX = "IPVSNC-";

/** A rule in someone else's chain that jumps into one of ours. */
export interface LiveJump {
  /** The chain holding the rule, e.g. `PREROUTING`. */
  readonly chain: string;
  /** The rule exactly as iptables-save printed it after `-A CHAIN `, usable verbatim with `-D`. */
  readonly spec: string;
  /** 0-based position of the rule within its chain. */
  readonly index: number;
}

/** Our part of one family's nat table. */
export interface LiveState {
  /** Our chains in the order iptables-save listed them, each with its rule specs in order. */
  readonly chains: ReadonlyMap<string, readonly string[]>;
  readonly jumps: readonly LiveJump[];
}

/** The state of a table that holds nothing of ours. */
export const EMPTY_STATE: LiveState = { chains: new Map(), jumps: [] };

/**
 * Splits a rule spec into words the way iptables-restore does: whitespace separates, a double
 * quoted string is one word and, inside it, a backslash escapes the next character.
 */
export function tokenize(spec: string): string[] {
  const words: string[] = [];
  let word = "";
  let inWord = false;
  let quoted = false;
  for (let i = 0; i < spec.length; i++) {
    const c = spec[i] as string;
    if (quoted) {
      if (c === "\\" && i + 1 < spec.length) {
        word += spec[++i];
      } else if (c === '"') {
        quoted = false;
      } else {
        word += c;
      }
    } else if (c === '"') {
      quoted = true;
      inWord = true;
    } else if (c === " " || c === "\t") {
      if (inWord) words.push(word);
      word = "";
      inWord = false;
    } else {
      word += c;
      inWord = true;
    }
  }
  if (inWord) words.push(word);
  return words;
}

/**
 * A comparison key for a rule spec that ignores how iptables-save chose to quote or space it
 * (it quotes a comment only when it holds characters outside `[A-Za-z0-9_-]`).
 */
export function normalizeSpec(spec: string): string {
  return tokenize(spec).join("\u0000");
}

/** The chain a rule spec jumps or goes to, if any. */
export function jumpTarget(spec: string): string | undefined {
  const words = tokenize(spec);
  for (let i = 0; i < words.length - 1; i++) {
    if (words[i] === "-j" || words[i] === "-g" || words[i] === "--jump" || words[i] === "--goto") {
      return words[i + 1];
    }
  }
  return undefined;
}

/**
 * Extracts our chains and the jumps into them from `iptables-save -t nat` output. Lines of other
 * tables (if the output holds several) are ignored.
 */
export function parseNatSave(output: string): LiveState {
  const chains = new Map<string, string[]>();
  const jumps: LiveJump[] = [];
  const ruleCounts = new Map<string, number>();
  let inNat = false;
  for (const rawLine of output.split("\n")) {
    const line = rawLine.trimEnd();
    if (line.startsWith("*")) {
      inNat = line === "*nat";
      continue;
    }
    if (!inNat) continue;
    if (line.startsWith(":")) {
      const name = line.slice(1).split(" ")[0] ?? "";
      if (name.startsWith(CHAIN_PREFIX) && !chains.has(name)) chains.set(name, []);
      continue;
    }
    const rule = /^-A (\S+) (.*)$/.exec(line);
    if (!rule) continue;
    const chain = rule[1] as string;
    const spec = rule[2] as string;
    const index = ruleCounts.get(chain) ?? 0;
    ruleCounts.set(chain, index + 1);
    if (chain.startsWith(CHAIN_PREFIX)) {
      const rules = chains.get(chain) ?? [];
      rules.push(spec);
      chains.set(chain, rules);
    } else if (jumpTarget(spec)?.startsWith(CHAIN_PREFIX)) {
      jumps.push({ chain, spec, index });
    }
  }
  return { chains, jumps };
}

/** True when the live state holds anything of ours. */
export function hasAnything(state: LiveState): boolean {
  return state.chains.size > 0 || state.jumps.length > 0;
}
