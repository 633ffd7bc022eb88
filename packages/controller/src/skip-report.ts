/**
 * Reports of skipped Services: one per Service, whatever number of problems it has. The core
 * reports every bad address and port on its own (a Service with 10,000 bad ports has 10,001
 * entries); a log must name such a Service once, with its reasons, a few examples and the count,
 * so that one hostile object cannot flood it.
 */
import type {
  Conflict,
  RulesetChanges,
  SkippedEntry,
  SkipReason,
} from "@ipvs-node-controller/core";
import type { Logger } from "pino";

/** Examples of details kept per Service. */
export const MAX_DETAILS = 5;

/** Everything skipped of one Service. */
export interface ServiceSkips {
  /** `namespace/name`, as the core printed it. */
  readonly service: string;
  /** Distinct reasons, in the core's order. */
  readonly reasons: readonly SkipReason[];
  /** The first {@link MAX_DETAILS} details. */
  readonly details: readonly string[];
  /** How many entries the Service had. */
  readonly count: number;
}

/** Groups entries by Service, keeping the order in which Services first appear. */
export function groupSkips(entries: readonly SkippedEntry[]): ServiceSkips[] {
  const groups = new Map<string, { reasons: SkipReason[]; details: string[]; count: number }>();
  for (const entry of entries) {
    let group = groups.get(entry.service);
    if (group === undefined) {
      group = { reasons: [], details: [], count: 0 };
      groups.set(entry.service, group);
    }
    if (!group.reasons.includes(entry.reason)) group.reasons.push(entry.reason);
    if (group.details.length < MAX_DETAILS) group.details.push(entry.detail);
    group.count += 1;
  }
  return [...groups].map(([service, group]) => ({ service, ...group }));
}

/**
 * One line: `InvalidIP: spec.clusterIPs[0]: 42 is not a string`, or with several entries
 * `InvalidPort, NoPorts: d1; d2; d3; d4; d5 (10001 problems)`.
 */
export function describeSkips(group: ServiceSkips): string {
  const more = group.count > group.details.length ? ` (${group.count} problems)` : "";
  return `${group.reasons.join(", ")}: ${group.details.join("; ")}${more}`;
}

/**
 * Logs each skip and warning of `changes` once, when it appears, and each skip again when it goes
 * away: one line per Service, however many of its addresses and ports are bad.
 */
export function logSkipChanges(log: Logger, changes: RulesetChanges): void {
  for (const group of groupSkips(changes.skipsAppeared)) {
    const many =
      group.count > 1
        ? { reasons: group.reasons, details: group.details, entries: group.count }
        : {};
    log.warn(
      { service: group.service, reason: group.reasons[0], detail: group.details[0], ...many },
      "service skipped",
    );
  }
  for (const group of groupSkips(changes.skipsDisappeared)) {
    const many = group.count > 1 ? { reasons: group.reasons, entries: group.count } : {};
    log.info(
      { service: group.service, reason: group.reasons[0], ...many },
      "service no longer skipped",
    );
  }
  for (const warning of changes.warningsAppeared) log.warn({ warning }, "node configuration");
}

/** Conflicts between one winner and one loser. */
export interface ConflictPair {
  readonly winner: string;
  readonly loser: string;
  /** The first contested key, e.g. `192.0.2.1 tcp/80`. */
  readonly example: string;
  /** How many (IP, protocol, port) the loser lost to the winner. */
  readonly count: number;
}

/** Groups conflicts by (winner, loser). */
export function groupConflicts(conflicts: readonly Conflict[]): ConflictPair[] {
  const pairs = new Map<
    string,
    { winner: string; loser: string; example: string; count: number }
  >();
  for (const conflict of conflicts) {
    const key = JSON.stringify([conflict.winner, conflict.loser]);
    const pair = pairs.get(key);
    if (pair === undefined) {
      pairs.set(key, {
        winner: conflict.winner,
        loser: conflict.loser,
        example: `${conflict.externalIP} ${conflict.protocol}/${conflict.port}`,
        count: 1,
      });
    } else {
      pair.count += 1;
    }
  }
  return [...pairs.values()];
}
