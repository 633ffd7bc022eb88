/**
 * The order of the DNAT rules: the key that sorts mappings like core, the buckets, the canonical
 * order of a full sync, and the rule numbers of inserts.
 */
import {
  compareMappings,
  type L4Protocol,
  type Mapping,
  sortMappings,
} from "@ipvs-node-controller/core";
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { bucketOf, DnatBuckets, DnatOrder, dnatKey, lowerBound } from "../src/dnat-order.js";
import { bucketChain, bucketJump, CHAINS, dnatRule, familyTarget } from "../src/render.js";
import { family, mapping, SETTINGS } from "./fixtures.js";

const POD_CIDRS = { kind: "sourceCIDRs", cidrs: ["10.244.1.0/24"] } as const;

const anyMapping: fc.Arbitrary<Mapping> = fc
  .record({
    v6: fc.boolean(),
    a: fc.nat(255),
    b: fc.nat(0xffff),
    protocol: fc.constantFrom<L4Protocol>("tcp", "udp", "sctp"),
    port: fc.integer({ min: 1, max: 65535 }),
  })
  .map(({ v6, a, b, protocol, port }) =>
    mapping(
      v6 ? `2001:db8:${a.toString(16)}::${b.toString(16)}` : `192.${a}.${b >> 8}.${b & 0xff}`,
      port,
      v6 ? "fd00::1" : "10.96.0.1",
      { protocol },
    ),
  );

describe("dnatKey", () => {
  it("sorts mappings of one family exactly like core's canonical order", () => {
    fc.assert(
      fc.property(anyMapping, anyMapping, (a, b) => {
        fc.pre(a.family === b.family);
        const [ka, kb] = [dnatKey(a), dnatKey(b)];
        expect(ka < kb ? -1 : ka > kb ? 1 : 0).toBe(Math.sign(compareMappings(a, b)));
      }),
      { numRuns: 2000 },
    );
  });

  it("orders by address, not by its text", () => {
    const keys = ["192.0.2.100", "192.0.2.9", "192.0.2.10"].map((ip) =>
      dnatKey(mapping(ip, 80, "10.96.0.1")),
    );
    expect([...keys].sort()).toEqual([keys[1], keys[2], keys[0]]);
  });
});

describe("bucketOf", () => {
  it("is the external IP's last byte, for both families", () => {
    expect(bucketOf(dnatKey(mapping("192.0.2.7", 80, "10.96.0.1")))).toBe("07");
    expect(bucketOf(dnatKey(mapping("198.51.100.255", 65535, "10.96.0.1")))).toBe("ff");
    expect(bucketOf(dnatKey(mapping("2001:db8::1:a0", 1, "fd00::1", { protocol: "sctp" })))).toBe(
      "a0",
    );
    expect(bucketOf(dnatKey(mapping("2001:db8::100", 80, "fd00::1")))).toBe("00");
  });
});

describe("familyTarget", () => {
  it("writes each bucket in canonical order whatever order the mappings came in", () => {
    fc.assert(
      fc.property(fc.uniqueArray(anyMapping, { selector: dnatKey, maxLength: 40 }), (list) => {
        for (const f of ["ipv4", "ipv6"] as const) {
          const mappings = list.filter((m) => m.family === f);
          const chains = familyTarget(family(f, POD_CIDRS, mappings), SETTINGS).chains;
          const buckets = [...new Set(mappings.map((m) => bucketOf(dnatKey(m))))].sort();
          expect(chains.get(CHAINS.dnat)).toEqual(buckets.map((b) => bucketJump(f, b)));
          for (const bucket of buckets) {
            const inBucket = mappings.filter((m) => bucketOf(dnatKey(m)) === bucket);
            expect(chains.get(bucketChain(bucket))).toEqual(sortMappings(inBucket).map(dnatRule));
          }
          expect(chains.size).toBe(5 + buckets.length);
        }
      }),
    );
  });
});

describe("DnatBuckets", () => {
  const keyOf = (n: number) => mapping(`192.0.${n >> 4}.${n & 0x7}`, 80, "10.96.0.1");
  it("after any change holds what a fresh one of the result holds", () => {
    fc.assert(
      fc.property(
        fc.uniqueArray(fc.nat(200), { maxLength: 40 }),
        fc.uniqueArray(fc.nat(200), { maxLength: 20 }),
        fc.uniqueArray(fc.nat(200), { maxLength: 20 }),
        (present, toDelete, toInsert) => {
          const keys = (ns: number[]) => [...new Set(ns.map((n) => dnatKey(keyOf(n))))].sort();
          const chain = keys(present);
          const deletes = keys(toDelete).filter((key) => chain.includes(key));
          const kept = chain.filter((key) => !deletes.includes(key));
          const inserts = keys(toInsert).filter((key) => !kept.includes(key));
          const buckets = DnatBuckets.of(chain);
          buckets.apply(deletes, inserts);
          const fresh = DnatBuckets.of([...kept, ...inserts].sort());
          expect(buckets.buckets.list()).toEqual(fresh.buckets.list());
          expect(buckets.list()).toEqual(fresh.list());
          expect(buckets.size).toBe(fresh.size);
          for (const bucket of fresh.buckets.list()) {
            expect(buckets.sizeOf(bucket)).toBe(fresh.sizeOf(bucket));
          }
        },
      ),
      { numRuns: 500 },
    );
  });
});

describe("DnatOrder.insertPositions", () => {
  it("gives the rule numbers that deleting, then inserting one by one, would need", () => {
    const keyOf = (n: number) => n.toString(16).padStart(4, "0");
    fc.assert(
      fc.property(
        fc.uniqueArray(fc.nat(300), { maxLength: 40 }),
        fc.uniqueArray(fc.nat(300), { maxLength: 10 }),
        fc.uniqueArray(fc.nat(300), { maxLength: 10 }),
        (present, toDelete, toInsert) => {
          const chain = [...present].sort((a, b) => a - b).map(keyOf);
          const deletes = toDelete
            .map(keyOf)
            .filter((key) => chain.includes(key))
            .sort();
          const kept = chain.filter((key) => !deletes.includes(key));
          const inserts = toInsert
            .map(keyOf)
            .filter((key) => !kept.includes(key))
            .sort();
          const order = DnatOrder.of(chain);
          const positions = order.insertPositions(deletes, inserts);
          // What the kernel does with the document: delete, then insert at each number.
          const simulated = [...kept];
          inserts.forEach((key, i) => {
            simulated.splice((positions[i] as number) - 1, 0, key);
          });
          const expected = [...kept, ...inserts].sort();
          expect(simulated).toEqual(expected);
          order.apply(deletes, inserts);
          expect(order.list()).toEqual(expected);
        },
      ),
      { numRuns: 1000 },
    );
  });

  it("finds positions by binary search", () => {
    expect(lowerBound(["b", "d", "f"], "a")).toBe(0);
    expect(lowerBound(["b", "d", "f"], "d")).toBe(1);
    expect(lowerBound(["b", "d", "f"], "e")).toBe(2);
    expect(lowerBound(["b", "d", "f"], "g")).toBe(3);
  });
});
