/**
 * Reading Services and Nodes from files, in any form `kubectl get -o yaml|json` prints.
 */
import { readFile } from "node:fs/promises";
import type { NodeInput, ServiceInput } from "@ipvs-node-controller/core";
import { parseAllDocuments } from "yaml";
import { errorLine } from "./error-line.js";

/** A file could not be read or parsed. The message names the file. */
export class InputFileError extends Error {
  override readonly name = "InputFileError";
}

/**
 * The value of a text that is plain JSON, else undefined. `kubectl get -o json` of a large cluster
 * is many megabytes, which JSON.parse reads some forty times faster than the YAML parser (0.3 s
 * against 11 s for 10,000 Services on a loaded 2-core machine). Anything else, YAML in flow style
 * included, is left to the YAML parser, which also words the errors.
 */
function parseJson(text: string): unknown {
  const first = text.trimStart()[0];
  if (first !== "{" && first !== "[") return undefined;
  try {
    return JSON.parse(text) as unknown;
  } catch {
    return undefined;
  }
}

async function readDocuments(path: string): Promise<unknown[]> {
  let text: string;
  try {
    text = await readFile(path, "utf8");
  } catch (error) {
    throw new InputFileError(`cannot read ${path}: ${(error as Error).message}`);
  }
  const json = parseJson(text);
  if (json !== undefined) return [json];
  // YAML is a superset of JSON, so one parser covers `-o json`, `-o yaml` and multi-document streams.
  const documents = parseAllDocuments(text);
  const values: unknown[] = [];
  for (const document of documents) {
    const [error] = document.errors;
    if (error !== undefined) {
      throw new InputFileError(`cannot parse ${path}: ${errorLine(error)}`);
    }
    const value = document.toJS();
    if (value !== null && value !== undefined) values.push(value);
  }
  return values;
}

function flatten(value: unknown): unknown[] {
  if (Array.isArray(value)) return value.flatMap(flatten);
  if (
    value !== null &&
    typeof value === "object" &&
    Array.isArray((value as { items?: unknown }).items)
  ) {
    return (value as { items: unknown[] }).items.flatMap(flatten);
  }
  return [value];
}

/**
 * Reads Services from a file holding a `List`, a `ServiceList`, single objects or a multi-document
 * YAML stream. Objects of other kinds are ignored; what is left is handed to the core, which skips
 * malformed Services one by one.
 */
export async function readServicesFile(path: string): Promise<ServiceInput[]> {
  const objects = (await readDocuments(path)).flatMap(flatten);
  return objects.filter((object): object is ServiceInput => {
    if (object === null || typeof object !== "object") return false;
    const kind = (object as { kind?: unknown }).kind;
    return kind === undefined || kind === "Service";
  });
}

/** Reads one Node object (or the first Node of a list). */
export async function readNode(path: string): Promise<NodeInput> {
  const objects = (await readDocuments(path)).flatMap(flatten);
  const node = objects.find((object) => (object as { kind?: unknown } | null)?.kind === "Node");
  if (node === undefined) throw new InputFileError(`${path} holds no Node object`);
  return node as NodeInput;
}
