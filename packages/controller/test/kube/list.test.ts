/**
 * Paged lists, as `run`'s reflectors and `doctor` read them, against an in-memory list call; the
 * real API server's pages are exercised in reflector.test.ts and doctor-api.test.ts.
 */
import { describe, expect, it } from "vitest";
import { type ListPage, listAll, listPages } from "../../src/kube/list.js";

/** A list of `pages`, each holding its numbers, answered page by page with continue tokens. */
function pagedList(pages: readonly (readonly number[])[]) {
  const asked: (string | undefined)[] = [];
  const list = async (token: string | undefined): Promise<ListPage> => {
    asked.push(token);
    const index = token === undefined ? 0 : Number(token);
    const next = index + 1 < pages.length ? String(index + 1) : undefined;
    return {
      items: pages[index] ?? [],
      metadata: { resourceVersion: "7", ...(next === undefined ? {} : { continue: next }) },
    };
  };
  return { list, asked };
}

describe("listAll", () => {
  it("follows the continue tokens to the last page, and keeps what trim keeps", async () => {
    const { list, asked } = pagedList([[1, 2], [3, 4], [5]]);
    const odd = await listAll(list, (item) => ((item as number) % 2 === 1 ? item : undefined));
    expect(odd).toEqual([1, 3, 5]);
    expect(asked).toEqual([undefined, "1", "2"]);
  });

  it("asks once for a list that fits on one page, also an empty one", async () => {
    const { list, asked } = pagedList([[]]);
    expect(await listAll(list, (item) => item)).toEqual([]);
    expect(asked).toEqual([undefined]);
  });

  it("fails with the list call's error", async () => {
    const failing = async (): Promise<ListPage> => {
      throw new Error("forbidden");
    };
    await expect(listAll(failing, (item) => item)).rejects.toThrow("forbidden");
  });
});

describe("listPages", () => {
  it("asks for no further page once stopped", async () => {
    const { list, asked } = pagedList([[1], [2], [3]]);
    const stop = new AbortController();
    const seen: unknown[] = [];
    for await (const page of listPages(list, stop.signal)) {
      seen.push(...page.items);
      stop.abort();
    }
    expect(seen).toEqual([1]);
    expect(asked).toEqual([undefined]);
  });
});
