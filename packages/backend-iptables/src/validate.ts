/**
 * Defensive checks on every value that reaches an iptables-restore document.
 *
 * The core already hands out validated rulesets, but a backend must not trust that: a hand-made
 * ruleset with a quote, a newline or a stray option in one field could otherwise inject rules into
 * the document. Every check here either accepts a value whose printed form is exactly what
 * iptables-save prints back, or throws a {@link BackendError} naming the offending field.
 */
import { isIPv4, isIPv6 } from "node:net";
import { BackendError, type IpFamily } from "@ipvs-node-controller/core";

/** The tool named in errors about the document itself (it is what would have choked on it). */
const DOCUMENT_TOOL = "iptables-restore";

/** Throws the error for one bad value; `what` names the field, the value is quoted with JSON escaping. */
export function invalid(what: string, value: unknown, why: string): never {
  throw new BackendError(
    `refusing to render ${what} ${JSON.stringify(value)}: ${why}`,
    DOCUMENT_TOOL,
  );
}

/** Kubernetes DNS label (RFC 1123), the only shape namespaces and names may have in a comment. */
const DNS_LABEL = /^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$/;

/** Interface names as the core documents them; iptables caps them at 15 characters (IFNAMSIZ - 1). */
const INTERFACE_NAME = /^[A-Za-z0-9_.-]{1,15}$/;

export function checkDnsLabel(what: string, value: unknown): string {
  if (typeof value !== "string" || !DNS_LABEL.test(value)) {
    invalid(what, value, "not a DNS label (lower-case letters, digits and '-', at most 63)");
  }
  return value;
}

export function checkInterfaceName(what: string, value: unknown): string {
  if (typeof value !== "string" || !INTERFACE_NAME.test(value)) {
    invalid(what, value, "not an interface name (1-15 of A-Z a-z 0-9 _ . -)");
  }
  return value;
}

/** A prefix becomes `prefix+`, which must itself fit in 15 characters. */
export function checkInterfacePrefix(what: string, value: unknown): string {
  const name = checkInterfaceName(what, value);
  if (name.length > 14) {
    invalid(what, value, "an interface prefix may have at most 14 characters (iptables adds '+')");
  }
  return name;
}

export function checkPort(what: string, value: unknown): number {
  if (typeof value !== "number" || !Number.isInteger(value) || value < 1 || value > 65535) {
    invalid(what, value, "not a port number 1-65535");
  }
  return value;
}

export function checkProtocol(what: string, value: unknown): "tcp" | "udp" | "sctp" {
  if (value !== "tcp" && value !== "udp" && value !== "sctp") {
    invalid(what, value, "not one of tcp, udp, sctp");
  }
  return value;
}

export function checkFamily(what: string, value: unknown): IpFamily {
  if (value !== "ipv4" && value !== "ipv6") {
    invalid(what, value, "not ipv4 or ipv6");
  }
  return value;
}

/** A non-zero unsigned 32-bit mark, printed as iptables-save prints it (lower-case hex). */
export function checkMark(value: unknown): number {
  if (typeof value !== "number" || !Number.isInteger(value) || value < 1 || value > 0xffffffff) {
    invalid("masqueradeMark", value, "not a non-zero unsigned 32-bit integer");
  }
  return value;
}

/**
 * An IPv6 address as the 8 16-bit groups it stands for, or undefined if `text` is not a plain
 * IPv6 address (zones, IPv4-embedded forms and anything else are refused).
 */
function ipv6Groups(text: string): number[] | undefined {
  if (!/^[0-9a-f:]+$/.test(text)) return undefined;
  const halves = text.split("::");
  if (halves.length > 2) return undefined;
  const parse = (part: string | undefined): number[] | undefined => {
    if (part === undefined || part === "") return [];
    const groups = part.split(":");
    if (groups.some((g) => g.length < 1 || g.length > 4)) return undefined;
    return groups.map((g) => Number.parseInt(g, 16));
  };
  const head = parse(halves[0]);
  const tail = parse(halves[1]);
  if (head === undefined || tail === undefined) return undefined;
  if (halves.length === 1) return head.length === 8 ? head : undefined;
  const missing = 8 - head.length - tail.length;
  if (missing < 1) return undefined;
  return [...head, ...new Array<number>(missing).fill(0), ...tail];
}

/** RFC 5952 text of 8 groups: the first longest run (of two or more) of zero groups becomes `::`. */
function formatIpv6(groups: readonly number[]): string {
  let bestStart = -1;
  let bestLength = 1;
  for (let i = 0; i < groups.length; ) {
    if (groups[i] !== 0) {
      i++;
      continue;
    }
    let j = i;
    while (j < groups.length && groups[j] === 0) j++;
    if (j - i > bestLength) {
      bestStart = i;
      bestLength = j - i;
    }
    i = j;
  }
  const hex = groups.map((g) => g.toString(16));
  if (bestStart < 0) return hex.join(":");
  return `${hex.slice(0, bestStart).join(":")}::${hex.slice(bestStart + bestLength).join(":")}`;
}

/**
 * Accepts only the canonical text of an address of `family` (the form iptables-save prints, so
 * that live state compares equal to rendered state), e.g. `192.0.2.1` or `2001:db8::1`.
 */
export function checkAddress(what: string, value: unknown, family: IpFamily): string {
  if (typeof value !== "string") invalid(what, value, "not a string");
  if (family === "ipv4") {
    if (!isIPv4(value) || !/^(0|[1-9]\d{0,2})(\.(0|[1-9]\d{0,2})){3}$/.test(value)) {
      invalid(what, value, "not a canonical IPv4 address");
    }
    return value;
  }
  const groups = isIPv6(value) ? ipv6Groups(value) : undefined;
  if (groups === undefined || formatIpv6(groups) !== value) {
    invalid(what, value, "not a canonical (RFC 5952) IPv6 address");
  }
  return value;
}

/** True when every address bit after `prefixLength` is zero. */
function hostBitsClear(bits: readonly number[], width: number, prefixLength: number): boolean {
  for (let bit = prefixLength; bit < bits.length * width; bit++) {
    const word = bits[Math.floor(bit / width)] ?? 0;
    if ((word >>> (width - 1 - (bit % width))) & 1) return false;
  }
  return true;
}

/** A canonical network `address/prefix` of `family` with no host bits set. */
export function checkCidr(what: string, value: unknown, family: IpFamily): string {
  if (typeof value !== "string") invalid(what, value, "not a string");
  const match = /^([^/]+)\/(0|[1-9]\d{0,2})$/.exec(value);
  if (!match) invalid(what, value, "not an address/prefix CIDR");
  const address = checkAddress(what, match[1], family);
  const prefixLength = Number(match[2]);
  const maxLength = family === "ipv4" ? 32 : 128;
  if (prefixLength > maxLength) invalid(what, value, `prefix length above ${maxLength}`);
  const clear =
    family === "ipv4"
      ? hostBitsClear(address.split(".").map(Number), 8, prefixLength)
      : hostBitsClear(ipv6Groups(address) ?? [], 16, prefixLength);
  if (!clear) invalid(what, value, "host bits are set (not a network address)");
  return value;
}
