/**
 * The canonical-ruleset check: the one place that decides whether a ruleset (or a change to one)
 * may reach a kernel tool. Every backend runs it before starting any program, so the same ruleset
 * is accepted or refused by both alike; a backend keeps only the limits of its own syntax.
 *
 * Rulesets from `computeRuleset` or `RulesetEngine` always pass. Hand-made ones are held to the
 * same form: canonical addresses and CIDRs of the right family (a non-canonical address could
 * never be found again when reading the kernel back, and nft would resolve an unparsable one
 * through DNS), ports 1–65535, known protocols, DNS-label owners (they reach rule comments), safe
 * interface names, unique keys and a non-zero 32-bit mark.
 */
import {
  type AddressRange,
  cidrRange,
  parseCIDR,
  parseClusterIP,
  parseExternalIP,
} from "./address.js";
import { validateInterfaceName } from "./config.js";
import { DNS_LABEL } from "./contribution.js";
import { InvalidRulesetError, quote } from "./errors.js";
import { isObject } from "./input.js";
import { mappingKey } from "./mapping.js";
import type { IpFamily, Mapping, Ruleset, RulesetSettings, RulesetUpdate } from "./types.js";

const PROTOCOLS: ReadonlySet<unknown> = new Set(["tcp", "udp", "sctp"]);

function invalid(field: string, problem: string): never {
  throw new InvalidRulesetError(field, problem);
}

function checkAddress(
  field: string,
  value: unknown,
  family: IpFamily,
  parse: typeof parseExternalIP,
): void {
  const parsed = parse(value);
  if (!parsed.ok) invalid(field, parsed.error);
  if (parsed.value.family !== family) invalid(field, `${quote(value)} is not an ${family} address`);
  if (parsed.value.address !== value) {
    invalid(field, `${quote(value)} is not canonical (expected "${parsed.value.address}")`);
  }
}

function checkLocalPods(field: string, match: unknown, family: IpFamily): void {
  const localPods: unknown = match;
  if (!isObject(localPods)) invalid(field, "is not an object");
  const interfaceName = (kind: "name" | "prefix", value: unknown) => {
    try {
      validateInterfaceName("", value, kind);
    } catch {
      const max = kind === "name" ? 15 : 14;
      invalid(
        `${field}.${kind}`,
        `${quote(value)} is not an interface ${kind} (1-${max} of A-Z a-z 0-9 _ . -)`,
      );
    }
  };
  switch (localPods.kind) {
    case "sourceCIDRs": {
      if (!Array.isArray(localPods.cidrs)) invalid(`${field}.cidrs`, "is not an array");
      localPods.cidrs.forEach((cidr: unknown, index: number) => {
        const at = `${field}.cidrs[${index}]`;
        const parsed = parseCIDR(cidr);
        if (!parsed.ok) invalid(at, parsed.error);
        if (parsed.value.family !== family) invalid(at, `${quote(cidr)} is not an ${family} CIDR`);
        if (parsed.value.cidr !== cidr) {
          invalid(at, `${quote(cidr)} is not canonical (expected "${parsed.value.cidr}")`);
        }
      });
      return;
    }
    case "inputInterface":
      interfaceName("name", localPods.name);
      return;
    case "inputInterfacePrefix":
      interfaceName("prefix", localPods.prefix);
      return;
    default:
      invalid(`${field}.kind`, `${quote(localPods.kind)} is not a known local-pod match`);
  }
}

/**
 * A restriction must name at least one source (an empty list would read as "nobody" to one
 * backend and "anybody" to another), each a canonical CIDR of the mapping's family, in address
 * order and none inside another, so that a read-back compares equal and nft takes them all.
 */
function checkAllowedSources(field: string, sources: unknown, family: IpFamily): void {
  if (!Array.isArray(sources)) invalid(field, "is not an array");
  if (sources.length === 0) invalid(field, "is empty; leave it out for an unrestricted mapping");
  let previous: AddressRange | undefined;
  sources.forEach((cidr: unknown, index: number) => {
    const at = `${field}[${index}]`;
    const parsed = parseCIDR(cidr);
    if (!parsed.ok) invalid(at, parsed.error);
    if (parsed.value.family !== family) invalid(at, `${quote(cidr)} is not an ${family} CIDR`);
    if (parsed.value.cidr !== cidr) {
      invalid(at, `${quote(cidr)} is not canonical (expected "${parsed.value.cidr}")`);
    }
    const range = cidrRange(cidr) as AddressRange;
    if (previous !== undefined && range.first <= previous.last) {
      invalid(at, `${quote(cidr)} is out of address order or inside the CIDR before it`);
    }
    previous = range;
  });
}

/** Checks the settings of a ruleset or diff: the mark and each family at most once. */
function checkSettings(settings: RulesetSettings): void {
  const mark: unknown = settings.masqueradeMark;
  if (typeof mark !== "number" || !Number.isInteger(mark) || mark < 1 || mark > 0xffffffff) {
    invalid("masqueradeMark", `${quote(mark)} is not a non-zero unsigned 32-bit integer`);
  }
  if (typeof settings.markPodTraffic !== "boolean") {
    invalid("markPodTraffic", `${quote(settings.markPodTraffic)} is not a boolean`);
  }
  if (!Array.isArray(settings.families)) invalid("families", "is not an array");
  const seen = new Set<string>();
  settings.families.forEach((entry, index) => {
    const field = `families[${index}]`;
    if (!isObject(entry)) invalid(field, "is not an object");
    if (entry.family !== "ipv4" && entry.family !== "ipv6") {
      invalid(`${field}.family`, `${quote(entry.family)} is not ipv4 or ipv6`);
    }
    if (seen.has(entry.family)) invalid(`${field}.family`, `${entry.family} is listed twice`);
    seen.add(entry.family);
    checkLocalPods(`${field}.localPods`, entry.localPods, entry.family);
  });
}

/**
 * Checks one mapping. `family` is the family of the list it is in; a change, whose mappings are
 * not grouped by family, passes the set of families it may have.
 */
export function validateMapping(
  field: string,
  mapping: Mapping,
  family: IpFamily | ReadonlySet<IpFamily>,
): void {
  if (!isObject(mapping)) invalid(field, "is not an object");
  const own = mapping.family;
  if (typeof family === "string" ? own !== family : !family.has(own)) {
    invalid(
      `${field}.family`,
      typeof family === "string"
        ? `${quote(own)} differs from its family ${family}`
        : `${quote(own)} is not an enabled family`,
    );
  }
  checkAddress(`${field}.externalIP`, mapping.externalIP, own, parseExternalIP);
  checkAddress(`${field}.clusterIP`, mapping.clusterIP, own, parseClusterIP);
  if (!PROTOCOLS.has(mapping.protocol)) {
    invalid(`${field}.protocol`, `${quote(mapping.protocol)} is not tcp, udp or sctp`);
  }
  const port: unknown = mapping.port;
  if (typeof port !== "number" || !Number.isInteger(port) || port < 1 || port > 65535) {
    invalid(`${field}.port`, `${quote(port)} is not a port (1-65535)`);
  }
  if (mapping.allowedSources !== undefined) {
    checkAllowedSources(`${field}.allowedSources`, mapping.allowedSources, own);
  }
  const service: unknown = mapping.service;
  if (!isObject(service)) invalid(`${field}.service`, "needs a namespace and a name");
  for (const part of ["namespace", "name"] as const) {
    const value = service[part];
    if (typeof value !== "string" || !DNS_LABEL.test(value)) {
      invalid(
        `${field}.service.${part}`,
        `${quote(value)} is not a DNS label (a-z, 0-9, -; at most 63)`,
      );
    }
  }
}

/**
 * Throws an {@link InvalidRulesetError} naming the first field of `ruleset` that breaks the
 * canonical form, e.g. `invalid ruleset: families[0].mappings[3].port 70000 is not a port (1-65535)`.
 * O(mappings).
 */
export function validateRuleset(ruleset: Ruleset): void {
  if (!isObject(ruleset)) invalid("ruleset", "is not an object");
  checkSettings(ruleset);
  const keys = new Set<string>();
  ruleset.families.forEach(({ family, mappings }, index) => {
    const field = `families[${index}].mappings`;
    if (!Array.isArray(mappings)) invalid(field, "is not an array");
    mappings.forEach((mapping, position) => {
      validateMapping(`${field}[${position}]`, mapping, family);
      const key = mappingKey(mapping);
      if (keys.has(key)) invalid(`${field}[${position}]`, `repeats the key ${key}`);
      keys.add(key);
    });
  });
}

/** Checks the fields that identify a mapping: a known family, a canonical address, protocol, port. */
function checkKey(field: string, key: unknown): void {
  if (!isObject(key)) invalid(field, "is not an object");
  const family = key.family;
  if (family !== "ipv4" && family !== "ipv6") {
    invalid(`${field}.family`, `${quote(family)} is not ipv4 or ipv6`);
  }
  checkAddress(`${field}.externalIP`, key.externalIP, family, parseExternalIP);
  if (!PROTOCOLS.has(key.protocol)) {
    invalid(`${field}.protocol`, `${quote(key.protocol)} is not tcp, udp or sctp`);
  }
  const port: unknown = key.port;
  if (typeof port !== "number" || !Number.isInteger(port) || port < 1 || port > 65535) {
    invalid(`${field}.port`, `${quote(port)} is not a port (1-65535)`);
  }
}

/**
 * Checks an update before it is applied: the next settings, every mapping it holds (of an enabled
 * family) and every key it removes (of any family: a family that is no longer enabled may still
 * have mappings to remove). O(keys in the update), whatever the size of the ruleset it applies to.
 */
export function validateUpdate(update: RulesetUpdate): void {
  if (!isObject(update)) invalid("update", "is not an object");
  checkSettings(update.settings);
  const families = new Set(update.settings.families.map(({ family }) => family));
  const list = (field: string, value: unknown): readonly unknown[] => {
    if (!Array.isArray(value)) invalid(field, "is not an array");
    return value;
  };
  list("removed", update.removed).forEach((key, index) => {
    checkKey(`removed[${index}]`, key);
  });
  list("mappings", update.mappings).forEach((mapping, index) => {
    validateMapping(`mappings[${index}]`, mapping as Mapping, families);
  });
}
