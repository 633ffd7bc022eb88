/**
 * Reading our table back, without a kernel: a listing built from what a full sync sends (nft
 * lists objects the way it was fed them), then tampered with. The kernel test proves the same
 * against nft's real listings.
 */
import { type Ruleset, settingsOf } from "@ipvs-node-controller/core";
import { describe, expect, it } from "vitest";
import { fullSyncDocument, nftLiveRules } from "../src/index.js";
import { READ_BACK_FIXTURE, ruleset } from "./helpers.js";

const TABLE = "ipvs-node-controller";
const { web, dns, web6, desired } = READ_BACK_FIXTURE;

type Listed = Record<string, Record<string, unknown>>;

/** The objects a full sync of `rules` creates, as `nft -j list table` shows them. */
function listed(rules: Ruleset): Listed[] {
  return fullSyncDocument(rules, TABLE)
    .nftables.slice(3) // the table's add, delete, add
    .map((command) => ("add" in command ? command.add : {}) as Listed);
}

const listing = (objects: readonly Listed[]) =>
  JSON.stringify({ nftables: [{ table: { family: "inet", name: TABLE } }, ...objects] });

const owned = (found: typeof web) => {
  const { service, ...rest } = found;
  return { ...rest, owner: `${service.namespace}/${service.name}` };
};

describe("nftLiveRules", () => {
  it("finds every translation, with its owner, and nothing wrong in what a sync creates", () => {
    const result = nftLiveRules(listing(listed(desired)), settingsOf(desired));
    expect(result).toMatchObject({ backend: "nft", present: true, problems: [] });
    expect(result.mappings).toEqual([owned(web), owned(dns), owned(web6)]);
  });

  it("reports an absent table as nothing present", () => {
    expect(nftLiveRules(undefined, settingsOf(desired))).toEqual({
      backend: "nft",
      tool: "nft",
      present: false,
      mappings: [],
      problems: [],
    });
  });

  it("names what differs around the translations, and elements that are not translations", () => {
    const objects = listed(desired).filter(
      (object) => object.chain?.name !== "output" && object.rule?.chain !== "output",
    );
    const map4 = objects.find((object) => object.map?.name === "mappings-ipv4")?.map as {
      elem: unknown[];
    };
    map4.elem.push([{ concat: ["2001:db8::1", "tcp", 80] }, "10.96.0.1"]);
    map4.elem.push([{ concat: ["192.0.2.99", "tcp", 8080] }, "10.96.0.99"]);
    const podSet = objects.find((object) => object.set?.name === "pod-cidrs-ipv4")?.set as {
      elem: unknown[];
    };
    podSet.elem = [{ prefix: { addr: "10.244.9.0", len: 24 } }];
    objects.push({ chain: { name: "sneaky", type: "nat", hook: "input", prio: 0 } });
    objects.push({ set: { name: "stray", type: "ipv4_addr" } });
    const result = nftLiveRules(listing(objects), settingsOf(desired));
    expect(result.problems).toEqual([
      "chain output is missing",
      "chain sneaky is not one a sync creates",
      "set pod-cidrs-ipv4 holds other addresses than the pod CIDRs (10.244.1.0/24)",
      "set stray is not one a sync creates",
      'map mappings-ipv4 holds an element that is not a translation: "[{\\"concat\\":[\\"2001:db8::1\\",\\"tcp\\",80]},\\"10.96.0.1\\"]"',
    ]);
    expect(result.mappings).toContainEqual({
      family: "ipv4",
      externalIP: "192.0.2.99",
      protocol: "tcp",
      port: 8080,
      clusterIP: "10.96.0.99",
      owner: "",
    });
  });

  it("compares chains and sets with the settings it is given", () => {
    const ipv4Only = ruleset([web, dns], { families: ["ipv4"], mark: 0x8000 });
    const result = nftLiveRules(listing(listed(desired)), settingsOf(ipv4Only));
    expect(result.problems).toEqual([
      "chain translate-masquerade-ipv4 lacks 1 rule of the 2 a sync writes",
      "chain translate-masquerade-ipv4 holds 1 rule a sync does not write",
      "chain prerouting holds 1 rule a sync does not write",
      "chain output holds 1 rule a sync does not write",
      "chain translate-ipv6 is not one a sync creates",
      "chain translate-masquerade-ipv6 is not one a sync creates",
      "set pod-cidrs-ipv6 belongs to an IP family that is not enabled",
      "map mappings-ipv6 belongs to an IP family that is not enabled",
      "set restricted-ipv6 belongs to an IP family that is not enabled",
      "set allowed-ipv6 belongs to an IP family that is not enabled",
    ]);
    // What a family that is not enabled still holds is reported: no Service wants it.
    expect(result.mappings).toContainEqual(owned(web6));
  });

  it("refuses output that is not nft's JSON", () => {
    expect(() => nftLiveRules("Error: something", settingsOf(desired))).toThrow();
  });
});
