/**
 * nft without a kernel, for the nft backend's unit tests: a {@link CommandRunner} that applies
 * `nft -j -f -` documents to tables in memory, all or nothing as the kernel does, and lists them
 * back the way `nft -j list` prints them, so a test sees what the backend decided and reads it
 * back through the real read-back. It knows what the backend sends (tables, sets, maps, chains,
 * rules, elements) and refuses what the kernel would: an element added to a collection that does
 * not exist, or deleted when it is not there, an object that does not exist. Anything else it does
 * not understand is refused, never ignored.
 *
 * ```ts
 * const nft = new FakeNft();
 * const backend = createNftBackend({ runner: nft.runner });
 * await backend.apply(ruleset);
 * nft.table("ipvs-node-controller"); // what a listing shows
 * nft.refuseNext("Error: Could not process rule: No such file or directory"); // the next transaction fails
 * ```
 */
import type { CommandResult, CommandRunner } from "@ipvs-node-controller/backend";

type Json = Record<string, unknown>;

interface FakeCollection {
  readonly kind: "set" | "map";
  readonly spec: Json;
  /** Elements by their key's JSON (comment left out), as sent. */
  readonly elements: Map<string, unknown>;
}

interface FakeTable {
  readonly collections: Map<string, FakeCollection>;
  readonly chains: Map<string, { readonly spec: Json; readonly rules: unknown[] }>;
}

/** Refused by the fake kernel: the message nft prints. */
class Refusal extends Error {}

const NOT_FOUND = "Error: Could not process rule: No such file or directory";

function isObject(value: unknown): value is Json {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}

function clone<T>(value: T): T {
  return structuredClone(value);
}

/** The key of an element, without its comment: what the kernel identifies it by. */
function elementKey(element: unknown): string {
  const key = Array.isArray(element) ? element[0] : element;
  const bare = isObject(key) && isObject(key.elem) ? key.elem.val : key;
  return JSON.stringify(bare);
}

/**
 * An element as the kernel lists it back: a one-address prefix (`/32`, `/128`) in an interval
 * set prints as the address itself, inside a concatenation too.
 */
function listed(element: unknown): unknown {
  if (isObject(element) && isObject(element.prefix)) {
    const { addr, len } = element.prefix;
    const host = String(addr).includes(":") ? 128 : 32;
    return len === host ? addr : element;
  }
  if (isObject(element) && Array.isArray(element.concat)) {
    return { concat: element.concat.map(listed) };
  }
  if (isObject(element) && isObject(element.elem)) {
    return { elem: { ...element.elem, val: listed(element.elem.val) } };
  }
  return element;
}

/** See the module comment. */
export class FakeNft {
  /** Tables by `family name`. */
  private tables = new Map<string, FakeTable>();
  private readonly refusals: string[] = [];
  /** Every call, in order: the arguments and, for a transaction, the document. */
  readonly calls: { readonly args: readonly string[]; readonly input?: string }[] = [];

  /** The runner to hand the backend: it answers as nft would. */
  readonly runner: CommandRunner = async (_file, args, options) => {
    this.calls.push({ args, input: options?.input });
    return this.run(args, options?.input);
  };

  /** Makes the next transaction fail with `stderr`, as a kernel refusing it. */
  refuseNext(stderr = "Error: Could not process rule: Invalid argument"): void {
    this.refusals.push(stderr);
  }

  /** The transactions sent so far, parsed. */
  documents(): Json[][] {
    return this.calls
      .filter((call) => call.input !== undefined)
      .map((call) => (JSON.parse(call.input as string) as { nftables: Json[] }).nftables);
  }

  /** `nft -j list table inet NAME`'s objects, or undefined when there is no such table. */
  table(name: string, family = "inet"): Json[] | undefined {
    const table = this.tables.get(`${family} ${name}`);
    if (table === undefined) return undefined;
    const base = { family, table: name };
    const objects: Json[] = [{ table: { family, name } }];
    for (const [setName, collection] of table.collections) {
      const elem = [...collection.elements.values()].map(listed);
      objects.push({
        [collection.kind]: {
          ...base,
          name: setName,
          ...collection.spec,
          ...(elem.length > 0 ? { elem } : {}),
        },
      });
    }
    for (const [chainName, chain] of table.chains) {
      objects.push({ chain: { ...base, name: chainName, ...chain.spec } });
    }
    for (const [chainName, chain] of table.chains) {
      for (const expr of chain.rules) objects.push({ rule: { ...base, chain: chainName, expr } });
    }
    return objects;
  }

  /** Deletes an element behind the backend's back, as an operator would; false if absent. */
  deleteElement(table: string, collection: string, key: unknown): boolean {
    return (
      this.tables
        .get(`inet ${table}`)
        ?.collections.get(collection)
        ?.elements.delete(JSON.stringify(key)) ?? false
    );
  }

  /** Removes a table behind the backend's back. */
  dropTable(name: string, family = "inet"): void {
    this.tables.delete(`${family} ${name}`);
  }

  private run(args: readonly string[], input: string | undefined): CommandResult {
    const ok = (stdout = ""): CommandResult => ({ stdout, stderr: "", exitCode: 0 });
    const fail = (stderr: string): CommandResult => ({
      stdout: "",
      stderr: `${stderr}\n`,
      exitCode: 1,
    });
    const joined = args.join(" ");
    if (joined === "--version") return ok("nftables v1.0.6 (Lester Gooch #5)\n");
    if (joined === "-j -f -") {
      const refusal = this.refusals.shift();
      if (refusal !== undefined) return fail(refusal);
      try {
        this.transact(input ?? "");
        return ok();
      } catch (error) {
        if (error instanceof Refusal) return fail(error.message);
        throw error;
      }
    }
    const list = /^-j list table (\S+) (\S+)$/.exec(joined);
    if (list) {
      const objects = this.table(list[2] as string, list[1]);
      if (objects === undefined)
        return fail(`Error: No such file or directory\nlist table ${list[1]} ${list[2]}`);
      return ok(JSON.stringify({ nftables: [{ metainfo: { version: "1.0.6" } }, ...objects] }));
    }
    const tables = /^-j list tables (\S+)$/.exec(joined);
    if (tables) {
      const names = [...this.tables.keys()]
        .filter((key) => key.startsWith(`${tables[1]} `))
        .map((key) => ({ table: { family: tables[1], name: key.slice(key.indexOf(" ") + 1) } }));
      return ok(JSON.stringify({ nftables: names }));
    }
    const drop = /^delete table (\S+) (\S+)$/.exec(joined);
    if (drop) {
      if (!this.tables.delete(`${drop[1]} ${drop[2]}`)) return fail(NOT_FOUND);
      return ok();
    }
    return fail(`Error: the fake nft does not know "${joined}"`);
  }

  /** Applies a document to a copy of the tables, which replaces them only if all of it applied. */
  private transact(text: string): void {
    let document: unknown;
    try {
      document = JSON.parse(text);
    } catch {
      throw new Refusal("Error: syntax error, unexpected junk");
    }
    if (!isObject(document) || !Array.isArray(document.nftables)) {
      throw new Refusal("Error: not a libnftables JSON document");
    }
    const tables = new Map([...this.tables].map(([key, table]) => [key, clone(table)]));
    for (const command of document.nftables) {
      if (!isObject(command)) throw new Refusal("Error: a command is not an object");
      const [verb, body] = Object.entries(command)[0] ?? [];
      if ((verb !== "add" && verb !== "delete") || !isObject(body)) {
        throw new Refusal(`Error: the fake nft does not know ${JSON.stringify(command)}`);
      }
      const [kind, object] = Object.entries(body)[0] ?? [];
      if (!isObject(object)) throw new Refusal("Error: an object is not an object");
      this.command(tables, verb, String(kind), object);
    }
    this.tables = tables;
  }

  private command(tables: Map<string, FakeTable>, verb: string, kind: string, object: Json): void {
    const family = String(object.family);
    if (kind === "table") {
      const key = `${family} ${String(object.name)}`;
      if (verb === "add") {
        if (!tables.has(key)) tables.set(key, { collections: new Map(), chains: new Map() });
      } else if (!tables.delete(key)) {
        throw new Refusal(NOT_FOUND);
      }
      return;
    }
    const table = tables.get(`${family} ${String(object.table)}`);
    if (table === undefined) throw new Refusal(NOT_FOUND);
    const { family: _f, table: _t, name, elem, ...spec } = object;
    if ((kind === "set" || kind === "map") && verb === "add") {
      if (!table.collections.has(String(name))) {
        table.collections.set(String(name), { kind, spec, elements: new Map() });
      }
      this.elements(table, String(name), "add", elem);
    } else if (kind === "element") {
      this.elements(table, String(name), verb, elem);
    } else if (kind === "chain" && verb === "add") {
      if (!table.chains.has(String(name))) table.chains.set(String(name), { spec, rules: [] });
    } else if (kind === "rule" && verb === "add") {
      const chain = table.chains.get(String(object.chain));
      if (chain === undefined) throw new Refusal(NOT_FOUND);
      chain.rules.push(clone(object.expr));
    } else {
      throw new Refusal(`Error: the fake nft does not know ${verb} ${kind}`);
    }
  }

  private elements(table: FakeTable, name: string, verb: string, elem: unknown): void {
    if (elem === undefined) return;
    const collection = table.collections.get(name);
    if (collection === undefined || !Array.isArray(elem)) throw new Refusal(NOT_FOUND);
    for (const element of elem) {
      const key = elementKey(element);
      if (verb === "add") {
        // Adding an element that is there is a no-op, as `nft add` is; another value is not.
        const existing = collection.elements.get(key);
        if (existing !== undefined && JSON.stringify(existing) !== JSON.stringify(element)) {
          throw new Refusal("Error: Could not process rule: File exists");
        }
        collection.elements.set(key, clone(element));
      } else if (!collection.elements.delete(key)) {
        throw new Refusal(NOT_FOUND);
      }
    }
  }
}
