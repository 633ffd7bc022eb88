/**
 * Strict parsing and canonicalisation of IP addresses and CIDRs.
 *
 * Everything that ends up in a kernel document passes through here, so the rules are narrow on
 * purpose: only the characters an address can contain, no zone suffixes, no IPv4-mapped IPv6, no
 * leading zeros in dotted decimal (which some parsers read as octal).
 */
import ipaddr from "ipaddr.js";
import { quote } from "./errors.js";
import type { IpFamily } from "./types.js";

/** A parsed address in canonical text form. */
export interface CanonicalIP {
  readonly family: IpFamily;
  /** Dotted decimal for IPv4, RFC 5952 (compressed, lower case) for IPv6. */
  readonly address: string;
  /** A fixed-width key that sorts addresses numerically within a family. */
  readonly sortKey: string;
}

/** A parsed CIDR: the network address (host bits cleared) and the prefix length. */
export interface CanonicalCIDR {
  readonly family: IpFamily;
  /** `address/prefix`, with the network address in canonical form. */
  readonly cidr: string;
}

/** Result of a parse: the value, or a sentence saying what is wrong with the input. */
export type Parsed<T> =
  | { readonly ok: true; readonly value: T }
  | { readonly ok: false; readonly error: string };

const IPV6_CHARS = /^[0-9A-Fa-f:.]+$/;
const MAX_ADDRESS_LENGTH = 45;

function fail<T>(error: string): Parsed<T> {
  return { ok: false, error };
}

const DOT = 46;
const ZERO = 48;
const NINE = 57;

/**
 * Parses strict dotted decimal (four octets 0-255, no leading zeros, nothing else) by hand: this
 * runs for every address of every Service on every sync, and a hand loop beats a regex and split.
 */
function parseDottedDecimal(text: string): number[] | undefined {
  const octets: number[] = [];
  let value = 0;
  let digits = 0;
  for (let i = 0; i <= text.length; i++) {
    const code = i < text.length ? text.charCodeAt(i) : DOT;
    if (code === DOT) {
      if (digits === 0 || octets.length === 4) return undefined;
      octets.push(value);
      value = 0;
      digits = 0;
    } else if (code >= ZERO && code <= NINE) {
      if (digits > 0 && value === 0) return undefined; // a leading zero reads as octal elsewhere
      value = value * 10 + code - ZERO;
      digits += 1;
      if (value > 255) return undefined;
    } else {
      return undefined;
    }
  }
  return octets.length === 4 ? octets : undefined;
}

const HEX_BYTE = Array.from({ length: 256 }, (_, byte) => byte.toString(16).padStart(2, "0"));

function hex(bytes: readonly number[]): string {
  let key = "";
  for (const byte of bytes) key += HEX_BYTE[byte];
  return key;
}

/** The special IPv4 ranges that can never be a Service's external address. */
function ipv4NonUnicastRange(address: string): string | undefined {
  if (address === "0.0.0.0") return "unspecified";
  if (address === "255.255.255.255") return "broadcast";
  // Canonical dotted decimal: the first octet is everything before the first dot.
  const first = Number(address.slice(0, address.indexOf(".")));
  if (first === 127) return "loopback";
  if (first >= 224 && first <= 239) return "multicast";
  return undefined;
}

/**
 * Parses one IP address strictly.
 *
 * Accepts dotted-decimal IPv4 without leading zeros and any textual IPv6 form except zone suffixes
 * (`fe80::1%eth0`) and IPv4-mapped addresses (`::ffff:192.0.2.1`), which would silently cross families.
 */
export function parseIP(value: unknown): Parsed<CanonicalIP> {
  if (typeof value !== "string") return fail(`${quote(value)} is not a string`);
  if (value.length === 0) return fail("the address is empty");
  if (value.length > MAX_ADDRESS_LENGTH)
    return fail(`${quote(value)} is too long for an IP address`);
  if (value.includes("%")) return fail(`${quote(value)} has a zone suffix, which is not allowed`);
  const octets = parseDottedDecimal(value);
  if (octets !== undefined) {
    // Strict dotted decimal is already canonical: the text is kept as is.
    const [a = 0, b = 0, c = 0, d = 0] = octets;
    const sortKey = (((a << 24) | (b << 16) | (c << 8) | d) >>> 0).toString(16).padStart(8, "0");
    return { ok: true, value: { family: "ipv4", address: value, sortKey } };
  }
  if (!value.includes(":")) return fail(`${quote(value)} is not a valid IPv4 or IPv6 address`);
  if (!IPV6_CHARS.test(value) || !ipaddr.IPv6.isValid(value)) {
    return fail(`${quote(value)} is not a valid IPv6 address`);
  }
  const parsed = ipaddr.IPv6.parse(value);
  if (parsed.isIPv4MappedAddress()) {
    return fail(`${quote(value)} is an IPv4-mapped IPv6 address; use the IPv4 address itself`);
  }
  return {
    ok: true,
    value: {
      family: "ipv6",
      address: parsed.toRFC5952String(),
      sortKey: hex(parsed.toByteArray()),
    },
  };
}

/**
 * Parses an address that may receive traffic as a Service's external IP: a unicast address, not
 * the unspecified address, a loopback, a multicast or the broadcast address.
 */
export function parseExternalIP(value: unknown): Parsed<CanonicalIP> {
  const parsed = parseIP(value);
  if (!parsed.ok) return parsed;
  const { family, address } = parsed.value;
  // IPv4 is checked by hand: this runs for every external IP of every Service on every sync.
  const range =
    family === "ipv4" ? ipv4NonUnicastRange(address) : ipaddr.IPv6.parse(address).range();
  if (
    range === "unspecified" ||
    range === "multicast" ||
    range === "broadcast" ||
    range === "loopback"
  ) {
    return fail(`${quote(value)} is a ${range} address, not a unicast one`);
  }
  return parsed;
}

/** Parses a cluster IP: any valid address except the unspecified one. */
export function parseClusterIP(value: unknown): Parsed<CanonicalIP> {
  const parsed = parseIP(value);
  if (!parsed.ok) return parsed;
  if (parsed.value.sortKey.replaceAll("0", "") === "") {
    return fail(`${quote(value)} is the unspecified address`);
  }
  return parsed;
}

/** Parses a CIDR strictly and clears its host bits (`10.244.1.7/24` becomes `10.244.1.0/24`). */
export function parseCIDR(value: unknown): Parsed<CanonicalCIDR> {
  if (typeof value !== "string") return fail(`${quote(value)} is not a string`);
  const slash = value.indexOf("/");
  if (slash < 0) return fail(`${quote(value)} is not a CIDR (missing "/prefix")`);
  const prefixText = value.slice(slash + 1);
  const address = parseIP(value.slice(0, slash));
  if (!address.ok) return fail(`${quote(value)} is not a valid CIDR: ${address.error}`);
  const maxPrefix = address.value.family === "ipv4" ? 32 : 128;
  if (!/^(0|[1-9][0-9]{0,2})$/.test(prefixText) || Number(prefixText) > maxPrefix) {
    return fail(`${quote(value)} has an invalid prefix length (0–${maxPrefix} expected)`);
  }
  const canonical = `${address.value.address}/${prefixText}`;
  const network =
    address.value.family === "ipv4"
      ? ipaddr.IPv4.networkAddressFromCIDR(canonical).toString()
      : ipaddr.IPv6.networkAddressFromCIDR(canonical).toRFC5952String();
  return { ok: true, value: { family: address.value.family, cidr: `${network}/${prefixText}` } };
}

/**
 * Parses one `spec.loadBalancerSourceRanges` entry the way kube-proxy reads it, so that both see
 * the same range: surrounding whitespace is ignored, an IPv4 octet or a prefix length may carry
 * leading zeros (read as decimal), and host bits are cleared. Anything else, IPv4-mapped IPv6
 * included, is not a CIDR.
 */
export function parseSourceRange(value: unknown): Parsed<CanonicalCIDR> {
  if (typeof value !== "string") return fail(`${quote(value)} is not a string`);
  const trimmed = value.trim();
  const slash = trimmed.indexOf("/");
  if (slash < 0) return fail(`${quote(value)} is not a CIDR (missing "/prefix")`);
  const address = trimmed.slice(0, slash);
  const prefix = trimmed.slice(slash + 1);
  if (!/^[0-9]{1,3}$/.test(prefix.replace(/^0+(?=[0-9])/, ""))) {
    return fail(`${quote(value)} has an invalid prefix length`);
  }
  const octets = address.split(".");
  const sloppyIPv4 =
    !address.includes(":") && octets.length === 4 && octets.every((o) => /^[0-9]{1,3}$/.test(o));
  const canonicalAddress = sloppyIPv4
    ? octets.map((octet) => String(Number(octet))).join(".")
    : address;
  const parsed = parseCIDR(`${canonicalAddress}/${Number(prefix)}`);
  return parsed.ok ? parsed : fail(`${quote(value)} is not a CIDR: ${parsed.error}`);
}

/** Whether `address` (canonical or not) lies inside the canonical `cidr`; false across families. */
export function cidrContains(cidr: string, address: string): boolean {
  const range = cidrRange(cidr);
  const value = addressValue(address);
  return (
    range !== undefined &&
    value !== undefined &&
    range.family === value.family &&
    value.value >= range.first &&
    value.value <= range.last
  );
}

/** A closed range of addresses of one family, as unsigned integers. */
export interface AddressRange {
  readonly family: IpFamily;
  readonly first: bigint;
  readonly last: bigint;
}

/** An address as an unsigned integer (32 bits for IPv4, 128 for IPv6), or undefined if invalid. */
export function addressValue(value: unknown): { family: IpFamily; value: bigint } | undefined {
  const parsed = parseIP(value);
  if (!parsed.ok) return undefined;
  // The sort key is the address's bytes in fixed-width hex: exactly its value.
  return { family: parsed.value.family, value: BigInt(`0x${parsed.value.sortKey}`) };
}

/** The addresses a CIDR covers, or undefined if it is not a valid CIDR. */
export function cidrRange(value: unknown): AddressRange | undefined {
  const parsed = parseCIDR(value);
  if (!parsed.ok) return undefined;
  const [address, prefixText] = parsed.value.cidr.split("/");
  const start = addressValue(address);
  if (start === undefined) return undefined;
  const hostBits = BigInt((parsed.value.family === "ipv4" ? 32 : 128) - Number(prefixText));
  return {
    family: parsed.value.family,
    first: start.value,
    last: start.value + (1n << hostBits) - 1n,
  };
}

/**
 * The canonical form of a set of CIDRs: each address covered once, by the outermost CIDR that
 * covers it (two CIDRs are nested or disjoint, never partly overlapping), in address order.
 * Nested ranges add nothing, and nft refuses some of them in one interval set. `cidrs` must be
 * canonical (see {@link parseCIDR}).
 */
export function outermostCIDRs(cidrs: readonly string[]): string[] {
  const ranges = cidrs.map((cidr) => ({ cidr, range: cidrRange(cidr) as AddressRange }));
  ranges.sort((a, b) =>
    a.range.first < b.range.first
      ? -1
      : a.range.first > b.range.first
        ? 1
        : a.range.last > b.range.last
          ? -1
          : a.range.last < b.range.last
            ? 1
            : 0,
  );
  const kept: typeof ranges = [];
  for (const entry of ranges) {
    const last = kept.at(-1);
    if (last === undefined || entry.range.first > last.range.last) kept.push(entry);
  }
  return kept.map(({ cidr }) => cidr);
}
