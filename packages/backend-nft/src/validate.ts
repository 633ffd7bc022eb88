/**
 * Defensive checks on a {@link Ruleset} before anything reaches nft.
 *
 * Rulesets computed by the core are already valid, but the backend also accepts hand-made ones.
 * JSON encoding keeps every string inside its document, so the only things checked here are the
 * ones nft would otherwise reject with a less helpful message, or accept in a surprising way
 * (a non-canonical address that `verify` could never find again, a duplicate key that would
 * make the whole transaction fail, an interface name with a wildcard in it).
 */
import {
  BackendError,
  type FamilyRuleset,
  type IpFamily,
  mappingKey,
  parseCIDR,
  parseIP,
  type Ruleset,
} from "@ipvs-node-controller/core";

const INTERFACE_NAME = /^[A-Za-z0-9_.-]+$/;
const PROTOCOLS = new Set(["tcp", "udp", "sctp"]);

function invalid(where: string, problem: string): never {
  throw new BackendError(`invalid ruleset: ${where} ${problem}`, "nft");
}

/** JSON.stringify, shortened, so hostile values cannot make an error message run on. */
function show(value: unknown): string {
  const text = JSON.stringify(value) ?? String(value);
  return text.length > 80 ? `${text.slice(0, 80)}…` : text;
}

function checkAddress(where: string, value: unknown, family: IpFamily): void {
  const parsed = parseIP(value);
  if (!parsed.ok) invalid(where, parsed.error);
  if (parsed.value.family !== family) invalid(where, `${show(value)} is not an ${family} address`);
  if (parsed.value.address !== value) {
    invalid(where, `${show(value)} is not canonical (expected "${parsed.value.address}")`);
  }
}

/**
 * Interface names have at most 15 characters (IFNAMSIZ - 1). A prefix gets nft's `*` wildcard
 * appended in the same field, so it may have at most 14.
 */
function checkInterfaceName(where: string, value: unknown, kind: "name" | "prefix"): void {
  const max = kind === "name" ? 15 : 14;
  if (typeof value !== "string" || !INTERFACE_NAME.test(value) || value.length > max) {
    invalid(where, `${show(value)} is not an interface ${kind} (1-${max} of A-Z a-z 0-9 _ . -)`);
  }
}

function checkFamily(family: FamilyRuleset, index: number): void {
  const where = `families[${index}]`;
  const localPods = family.localPods as unknown as Record<string, unknown> | undefined;
  switch (localPods?.kind) {
    case "sourceCIDRs": {
      if (!Array.isArray(localPods.cidrs)) invalid(`${where}.localPods.cidrs`, "is not an array");
      localPods.cidrs.forEach((cidr: unknown, position: number) => {
        const at = `${where}.localPods.cidrs[${position}]`;
        const parsed = parseCIDR(cidr);
        if (!parsed.ok) invalid(at, parsed.error);
        if (parsed.value.family !== family.family) {
          invalid(at, `${show(cidr)} is not an ${family.family} CIDR`);
        }
        if (parsed.value.cidr !== cidr) {
          invalid(at, `${show(cidr)} is not canonical (expected "${parsed.value.cidr}")`);
        }
      });
      break;
    }
    case "inputInterface":
      checkInterfaceName(`${where}.localPods.name`, localPods.name, "name");
      break;
    case "inputInterfacePrefix":
      checkInterfaceName(`${where}.localPods.prefix`, localPods.prefix, "prefix");
      break;
    default:
      invalid(`${where}.localPods.kind`, `${show(localPods?.kind)} is not a known local-pod match`);
  }
  if (!Array.isArray(family.mappings)) invalid(`${where}.mappings`, "is not an array");
  family.mappings.forEach((mapping, position) => {
    const at = `${where}.mappings[${position}]`;
    if (typeof mapping !== "object" || mapping === null) invalid(at, "is not an object");
    if (mapping.family !== family.family) {
      invalid(`${at}.family`, `${show(mapping.family)} differs from its family ${family.family}`);
    }
    checkAddress(`${at}.externalIP`, mapping.externalIP, family.family);
    checkAddress(`${at}.clusterIP`, mapping.clusterIP, family.family);
    if (!PROTOCOLS.has(mapping.protocol)) {
      invalid(`${at}.protocol`, `${show(mapping.protocol)} is not tcp, udp or sctp`);
    }
    if (!Number.isInteger(mapping.port) || mapping.port < 1 || mapping.port > 65535) {
      invalid(`${at}.port`, `${show(mapping.port)} is not a port (1-65535)`);
    }
    if (
      typeof mapping.service !== "object" ||
      mapping.service === null ||
      typeof mapping.service.namespace !== "string" ||
      typeof mapping.service.name !== "string"
    ) {
      invalid(`${at}.service`, "needs string namespace and name");
    }
  });
}

/**
 * Throws a {@link BackendError} naming the first problem found in `ruleset`, if any.
 * Service names are not restricted here: they only reach element comments, which are sanitised.
 */
export function validateRuleset(ruleset: Ruleset): void {
  if (typeof ruleset !== "object" || ruleset === null) invalid("ruleset", "is not an object");
  const mark = ruleset.masqueradeMark;
  if (!Number.isInteger(mark) || mark < 0 || mark > 0xffffffff) {
    invalid("masqueradeMark", `${show(mark)} is not an unsigned 32-bit integer`);
  }
  if (!Array.isArray(ruleset.families)) invalid("families", "is not an array");
  const seenFamilies = new Set<string>();
  const seenKeys = new Set<string>();
  ruleset.families.forEach((family, index) => {
    if (family?.family !== "ipv4" && family?.family !== "ipv6") {
      invalid(`families[${index}].family`, `${show(family?.family)} is not ipv4 or ipv6`);
    }
    if (seenFamilies.has(family.family)) invalid(`families[${index}]`, `repeats ${family.family}`);
    seenFamilies.add(family.family);
    checkFamily(family, index);
    for (const mapping of family.mappings) {
      const key = mappingKey(mapping);
      if (seenKeys.has(key)) invalid(`families[${index}].mappings`, `repeat the key ${key}`);
      seenKeys.add(key);
    }
  });
}
