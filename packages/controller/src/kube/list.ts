/**
 * Paged list calls: the API server answers a list in pages of at most `limit` objects, each with
 * a token for the next one. `run`'s reflectors and `doctor` read every page the same way.
 */

/** One page of a list call, as the API server sends it. */
export interface ListPage {
  readonly items: readonly unknown[];
  readonly metadata?: { readonly resourceVersion?: string; readonly continue?: string };
}

/** Lists one page; `continueToken` is undefined for the first page. */
export type ListCall = (continueToken: string | undefined) => Promise<ListPage>;

/**
 * The pages of one list, in order, each asked for once the previous one has been handled, so that
 * no more than one page of whole objects is held at a time. Ends after the last page, or early
 * once `stop` aborts.
 */
export async function* listPages(list: ListCall, stop?: AbortSignal): AsyncGenerator<ListPage> {
  let continueToken: string | undefined;
  do {
    const page = await list(continueToken);
    yield page;
    continueToken = page.metadata?.continue || undefined;
  } while (continueToken !== undefined && !stop?.aborted);
}

/** Every object of a list, trimmed; objects that `trim` drops are left out. */
export async function listAll<T>(
  list: ListCall,
  trim: (object: unknown) => T | undefined,
): Promise<T[]> {
  const objects: T[] = [];
  for await (const page of listPages(list)) {
    for (const item of page.items) {
      const trimmed = trim(item);
      if (trimmed !== undefined) objects.push(trimmed);
    }
  }
  return objects;
}
