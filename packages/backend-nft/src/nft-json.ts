/**
 * The part of libnftables' JSON schema (libnftables-json(5)) that this backend writes with
 * `nft -j -f` and reads back from `nft -j list`: commands, the objects of one `inet` table, and the
 * expressions and statements of its rules. The compiler builds these types, so a misspelt key or a
 * statement in the wrong place is a type error rather than a transaction the kernel refuses.
 */

/** The address family of our table; one `inet` table serves IPv4 and IPv6. */
export type NftTableFamily = "inet";

/** The `payload` protocols our rules read: the network header of a family, or the transport's. */
export type NftPayloadProtocol = "ip" | "ip6" | "th";

// ---------------------------------------------------------------------------------- expressions

/** A header field: `ip daddr`, `ip6 saddr`, `th dport`. */
export interface NftPayload {
  readonly payload: {
    readonly protocol: NftPayloadProtocol;
    readonly field: "saddr" | "daddr" | "dport";
  };
}

/** Packet metadata: `meta l4proto`, `meta mark`, `meta iifname`. */
export interface NftMeta {
  readonly meta: { readonly key: "l4proto" | "mark" | "iifname" };
}

/** A routing lookup: `fib daddr type`, `fib saddr type`. */
export interface NftFib {
  readonly fib: { readonly result: "type"; readonly flags: readonly ("saddr" | "daddr")[] };
}

/** Several expressions as one key: `ip daddr . meta l4proto . th dport`. */
export interface NftConcat {
  readonly concat: readonly NftExpression[];
}

/** A CIDR: `192.0.2.0/24`. */
export interface NftPrefix {
  readonly prefix: { readonly addr: string; readonly len: number };
}

/** A map lookup: the value `key` maps to in `data` (a `@map` reference). */
export interface NftMapLookup {
  readonly map: { readonly key: NftExpression; readonly data: NftReference };
}

/** A bitwise or: `meta mark | 0x4000`. */
export interface NftOr {
  readonly "|": readonly [NftExpression, NftExpression];
}

/** A named set or map of the same table: `@mappings-ipv4`. */
export type NftReference = `@${string}`;

/**
 * An expression: an immediate (address, protocol name, port, interface name or pattern, `local`)
 * or one of the above.
 */
export type NftExpression =
  | string
  | number
  | NftPayload
  | NftMeta
  | NftFib
  | NftConcat
  | NftPrefix
  | NftMapLookup
  | NftOr;

// ----------------------------------------------------------------------------------- statements

/** `left op right`; with a `@set` on the right, a membership test. */
export interface NftMatch {
  readonly match: {
    readonly op: "==" | "!=";
    readonly left: NftExpression;
    readonly right: NftExpression;
  };
}

/** Destination NAT of one family to the address `addr` evaluates to. */
export interface NftDnat {
  readonly dnat: { readonly family: "ip" | "ip6"; readonly addr: NftExpression };
}

/** Sets `key` to `value`: `meta mark set meta mark | 0x4000`. */
export interface NftMangle {
  readonly mangle: { readonly key: NftMeta; readonly value: NftExpression };
}

export interface NftGoto {
  readonly goto: { readonly target: string };
}

export interface NftReturn {
  readonly return: null;
}

/** One statement of a rule. */
export type NftStatement = NftMatch | NftDnat | NftMangle | NftGoto | NftReturn;

// --------------------------------------------------------------------------------------- objects

/** An element with its comment: `192.0.2.10 . tcp . 80 comment "shop/web"`. */
export interface NftCommentedElement {
  readonly elem: { readonly val: NftExpression; readonly comment?: string };
}

/** A set element: a key (a CIDR, a concatenation) with or without a comment. */
export type NftSetElement = NftExpression | NftCommentedElement;

/** A map element: `[key, value]`. */
export type NftMapElement = readonly [NftSetElement, NftExpression];

interface NftInTable {
  readonly family: NftTableFamily;
  readonly table: string;
}

export interface NftTable {
  readonly family: NftTableFamily;
  readonly name: string;
}

/** A chain; a base chain has a type, a hook, a priority and a policy. */
export interface NftChain extends NftInTable {
  readonly name: string;
  readonly type?: "nat";
  readonly hook?: "prerouting" | "output";
  readonly prio?: number;
  readonly policy?: "accept";
}

/** A named set; `type` is one type or the types of a concatenation. */
export interface NftSet extends NftInTable {
  readonly name: string;
  readonly type: string | readonly string[];
  readonly flags?: readonly "interval"[];
  readonly elem?: readonly NftSetElement[];
}

/** A named map from keys of `type` to values of type `map`. */
export interface NftMap extends NftInTable {
  readonly name: string;
  readonly type: string | readonly string[];
  readonly map: string;
  readonly flags?: readonly "interval"[];
  readonly elem?: readonly NftMapElement[];
}

export interface NftRule extends NftInTable {
  readonly chain: string;
  readonly expr: readonly NftStatement[];
}

/** Elements added to or deleted from the set or map `name`. */
export interface NftElements extends NftInTable {
  readonly name: string;
  readonly elem: readonly (NftSetElement | NftMapElement)[];
}

/** What a command acts on. */
export type NftObject =
  | { readonly table: NftTable }
  | { readonly chain: NftChain }
  | { readonly set: NftSet }
  | { readonly map: NftMap }
  | { readonly rule: NftRule }
  | { readonly element: NftElements };

/** One command of a transaction. */
export type NftCommand =
  | { readonly add: NftObject }
  | { readonly delete: NftObject }
  | { readonly flush: NftObject };

/** A complete `nft -j -f` document: one transaction. */
export interface NftDocument {
  readonly nftables: readonly NftCommand[];
}
