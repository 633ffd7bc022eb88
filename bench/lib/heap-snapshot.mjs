// Where a V8 heap goes: the self size of every object in a `.heapsnapshot`, grouped the way the
// Summary view of Chrome's DevTools groups them (by constructor for JavaScript objects, by kind
// for the engine's internals). V8 collects garbage before it writes a snapshot, so the total is
// the live heap.
//
//   node --max-old-space-size=4096 bench/lib/heap-snapshot.mjs FILE.heapsnapshot

import { readFileSync } from "node:fs";
import { pathToFileURL } from "node:url";

const KINDS = {
  hidden: "(system)",
  array: "(internal array)",
  string: "(string)",
  "concatenated string": "(string)",
  "sliced string": "(string)",
  code: "(compiled code)",
  closure: "(closure)",
  regexp: "(regexp)",
  number: "(heap number)",
  bigint: "(bigint)",
  "object shape": "(object shape)",
};

/** Groups by constructor: `{ totalBytes, objects, groups: Map<name, { count, bytes }> }`. */
export function groupSnapshot(snapshot) {
  const { node_fields: fields, node_types: types } = snapshot.snapshot.meta;
  const width = fields.length;
  const typeAt = fields.indexOf("type");
  const nameAt = fields.indexOf("name");
  const sizeAt = fields.indexOf("self_size");
  const typeNames = types[typeAt];
  const { nodes, strings } = snapshot;
  const groups = new Map();
  let totalBytes = 0;
  for (let i = 0; i < nodes.length; i += width) {
    const type = typeNames[nodes[i + typeAt]];
    const bytes = nodes[i + sizeAt];
    const name =
      type === "object" || type === "native" ? strings[nodes[i + nameAt]] : (KINDS[type] ?? type);
    const group = groups.get(name) ?? { count: 0, bytes: 0 };
    group.count++;
    group.bytes += bytes;
    groups.set(name, group);
    totalBytes += bytes;
  }
  return { totalBytes, objects: nodes.length / width, groups };
}

/** The `limit` largest groups, in KiB. */
export function topGroups(groups, limit = 10) {
  return [...groups.entries()]
    .sort((a, b) => b[1].bytes - a[1].bytes)
    .slice(0, limit)
    .map(([name, { count, bytes }]) => ({ name, count, kib: Math.round(bytes / 1024) }));
}

/** A summary that fits in a report: totals and the groups, all of them, as plain data. */
export function summarizeSnapshotFile(path) {
  const { totalBytes, objects, groups } = groupSnapshot(JSON.parse(readFileSync(path, "utf8")));
  return {
    totalBytes,
    objects,
    groups: Object.fromEntries([...groups].map(([name, g]) => [name, [g.count, g.bytes]])),
  };
}

if (import.meta.url === pathToFileURL(process.argv[1]).href) {
  process.stdout.write(JSON.stringify(summarizeSnapshotFile(process.argv[2])));
}
