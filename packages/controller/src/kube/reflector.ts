/**
 * A list+watch reflector that hands every object of one kind, trimmed, to its consumer, and never
 * gives up.
 *
 * client-node's own informer stops for good on any error other than 410 Gone and keeps whole
 * objects (managedFields included). A node agent must instead follow the API server through
 * restarts and outages, and should hold as little as it can: this reflector keeps only each
 * object's key (to tell, after a relist, which objects went away), and the consumer keeps what it
 * derives from the objects. Every wait (retry delays, the list and watch time limits) is on the
 * injected {@link Clock}.
 */
import { type Backoff, backoffDelay } from "../backoff.js";
import { type Clock, systemClock } from "../clock.js";
import type { WatchClient, WatchHandle } from "./api-client.js";
import type { Resource } from "./cluster.js";
import { listPages } from "./list.js";

/** Lifecycle events, for logs and metrics. */
export type ReflectorEvent =
  | { readonly type: "listed"; readonly objects: number }
  /** The server accepted a watch (answered 200): the connection to it works again. */
  | { readonly type: "watching" }
  | { readonly type: "watch-ended"; readonly error?: unknown }
  | { readonly type: "expired" }
  | { readonly type: "retry"; readonly error: unknown; readonly delayMs: number };

/** How a reflector lists, watches and trims its objects, and whom it tells. */
export interface ReflectorOptions<T> extends Resource<T> {
  readonly watch: WatchClient;
  /**
   * Called with every object as it arrives, trimmed: added or updated (by a watch event, or by a
   * list, page by page) or deleted (undefined; by a watch event, or at the end of a relist for
   * every object the list no longer holds). Deciding whether an update matters is the
   * consumer's business.
   */
  readonly onChange: (key: string, object: T | undefined) => void;
  /** Lifecycle notifications. */
  readonly onEvent?: (event: ReflectorEvent) => void;
  /** Retry delays: doubled from `initialMs` up to `maxMs`, with jitter. */
  readonly backoff?: Backoff;
  /** The server ends each watch after a random time in this range (seconds). Default 300–600. */
  readonly watchTimeoutSeconds?: readonly [number, number];
  /**
   * A watch still open this long after the server should have ended it is taken for a dead
   * connection (a half-open TCP stream never errors) and restarted. Default 30 s.
   */
  readonly stallGraceMs?: number;
  /** A list call taking longer than this is abandoned and retried. Default 60 s. */
  readonly listTimeoutMs?: number;
  /** Where time is read and waited for. Default: the real clock. */
  readonly clock?: Clock;
  /** A number in [0, 1), for the jitter of retry delays and watch timeouts. Default `Math.random`. */
  readonly random?: () => number;
}

interface ObjectMeta {
  readonly namespace?: string;
  readonly name?: string;
  readonly resourceVersion?: string;
}

function metaOf(object: unknown): ObjectMeta {
  const metadata = (object as { metadata?: ObjectMeta } | null)?.metadata;
  return metadata ?? {};
}

function keyOf(object: unknown): string {
  const { namespace, name } = metaOf(object);
  return `${namespace ?? ""}/${name ?? ""}`;
}

function statusCode(error: unknown): number | undefined {
  const candidate = error as { statusCode?: unknown; code?: unknown } | null;
  if (typeof candidate?.statusCode === "number") return candidate.statusCode;
  if (typeof candidate?.code === "number") return candidate.code;
  return undefined;
}

/** A resourceVersion too old for the server: start again with a fresh list. */
class ExpiredError extends Error {}

/** Follows the API server's objects of one kind, through errors and restarts. */
export class Reflector<T> {
  /** The key (`namespace/name`) of every object present. */
  private readonly present = new Set<string>();
  private resourceVersion = "";
  private synced = false;
  private readonly stopper = new AbortController();
  private currentWatch: WatchHandle | undefined;
  private loop: Promise<void> | undefined;
  private readonly clock: Clock;
  private readonly random: () => number;

  constructor(private readonly options: ReflectorOptions<T>) {
    this.clock = options.clock ?? systemClock;
    this.random = options.random ?? Math.random;
  }

  /** True once the first complete list has been handed over. */
  get hasSynced(): boolean {
    return this.synced;
  }

  /** Starts listing and watching in the background. */
  start(): void {
    this.loop ??= this.run();
  }

  /** Stops watching; resolves when the background loop has ended. */
  async stop(): Promise<void> {
    this.stopper.abort();
    this.currentWatch?.abort();
    await this.loop;
  }

  private get stopped(): boolean {
    return this.stopper.signal.aborted;
  }

  /** Waits `ms` on the clock, or less when the reflector stops or `cancel` aborts. */
  private async sleep(ms: number, cancel?: AbortSignal): Promise<void> {
    const wake = new AbortController();
    const abort = () => wake.abort();
    const signals = cancel === undefined ? [this.stopper.signal] : [this.stopper.signal, cancel];
    for (const signal of signals) {
      if (signal.aborted) wake.abort();
      signal.addEventListener("abort", abort);
    }
    try {
      await this.clock.sleep(ms, wake.signal);
    } finally {
      for (const signal of signals) signal.removeEventListener("abort", abort);
    }
  }

  /** Rejects when `promise` has not settled within `ms`, or as soon as the reflector stops. */
  private async withTimeout<R>(promise: Promise<R>, ms: number, what: string): Promise<R> {
    const settled = new AbortController();
    const deadline = this.sleep(ms, settled.signal).then((): never => {
      throw new Error(this.stopped ? `${what} stopped` : `${what} timed out after ${ms} ms`);
    });
    try {
      // The race handles the deadline's rejection also when the promise wins.
      return await Promise.race([promise, deadline]);
    } finally {
      settled.abort();
    }
  }

  private async run(): Promise<void> {
    const backoff = this.options.backoff ?? { initialMs: 500, maxMs: 30_000 };
    let failures = 0;
    while (!this.stopped) {
      try {
        if (this.resourceVersion === "") await this.relist();
        await this.watchOnce();
        failures = 0;
      } catch (error) {
        if (this.stopped) break;
        if (error instanceof ExpiredError || statusCode(error) === 410) {
          this.options.onEvent?.({ type: "expired" });
          this.resourceVersion = "";
          continue;
        }
        failures += 1;
        const base = backoffDelay(backoff, failures);
        const delayMs = Math.round(base * (0.8 + this.random() * 0.4));
        this.options.onEvent?.({ type: "retry", error, delayMs });
        await this.sleep(delayMs);
      }
    }
  }

  /**
   * Lists every page and hands each object over as its page arrives, so no more than one page of
   * whole objects is ever held; objects the list no longer holds are reported deleted at the end.
   */
  private async relist(): Promise<void> {
    const listed = new Set<string>();
    let resourceVersion = "";
    const list = (continueToken: string | undefined) =>
      this.withTimeout(
        this.options.list(continueToken),
        this.options.listTimeoutMs ?? 60_000,
        `listing ${this.options.name}`,
      );
    for await (const page of listPages(list, this.stopper.signal)) {
      for (const item of page.items) {
        const trimmed = this.options.trim(item);
        if (trimmed === undefined) continue;
        const key = keyOf(item);
        listed.add(key);
        this.present.add(key);
        this.options.onChange(key, trimmed);
      }
      resourceVersion = page.metadata?.resourceVersion ?? "";
    }
    for (const key of [...this.present]) {
      if (listed.has(key)) continue;
      this.present.delete(key);
      this.options.onChange(key, undefined);
    }
    this.resourceVersion = resourceVersion;
    this.synced = true;
    this.options.onEvent?.({ type: "listed", objects: listed.size });
  }

  /** Watches from the stored resourceVersion until the server or the network ends the stream. */
  private watchOnce(): Promise<void> {
    // The server closes the watch after timeoutSeconds; a spread keeps many nodes from
    // re-watching in lockstep, as client-go does.
    const [minSeconds, maxSeconds] = this.options.watchTimeoutSeconds ?? [300, 600];
    const timeoutSeconds = minSeconds + Math.floor(this.random() * (maxSeconds - minSeconds + 1));
    return new Promise<void>((resolve, reject) => {
      let expired = false;
      let settled = false;
      const ended = new AbortController();
      const settle = (outcome: () => void) => {
        if (settled) return;
        settled = true;
        ended.abort();
        this.stopper.signal.removeEventListener("abort", onStop);
        outcome();
      };
      // stop() ends the wait at once, whether or not the aborted stream reports its end.
      const onStop = () => settle(resolve);
      this.stopper.signal.addEventListener("abort", onStop);
      void this.sleep(
        timeoutSeconds * 1000 + (this.options.stallGraceMs ?? 30_000),
        ended.signal,
      ).then(() => {
        if (settled || this.stopped) return;
        this.currentWatch?.abort();
        settle(() =>
          reject(
            new Error(
              `the ${this.options.name} watch stalled past its ${timeoutSeconds} s timeout`,
            ),
          ),
        );
      });
      const onEvent = (phase: string, object: unknown) => {
        if (phase === "ERROR") {
          // The server reports "too old resource version" as an in-stream Status, then closes.
          if (statusCode(object) === 410) expired = true;
          return;
        }
        const version = metaOf(object).resourceVersion;
        if (version) this.resourceVersion = version;
        if (phase === "BOOKMARK") return;
        const key = keyOf(object);
        const trimmed = phase === "DELETED" ? undefined : this.options.trim(object);
        if (trimmed === undefined) {
          if (this.present.delete(key)) this.options.onChange(key, undefined);
        } else {
          this.present.add(key);
          this.options.onChange(key, trimmed);
        }
      };
      const onDone = (error: unknown) => {
        this.currentWatch = undefined;
        this.options.onEvent?.({ type: "watch-ended", error: error ?? undefined });
        settle(() => {
          if (expired) reject(new ExpiredError("resource version expired"));
          else if (error && !this.stopped) reject(error);
          else resolve();
        });
      };
      this.options.watch
        .watch(
          this.options.watchPath,
          {
            ...this.options.watchQuery,
            resourceVersion: this.resourceVersion,
            allowWatchBookmarks: "true",
            timeoutSeconds: String(timeoutSeconds),
          },
          onEvent,
          onDone,
        )
        .then(
          (controller) => {
            this.currentWatch = controller;
            if (this.stopped || settled) {
              controller.abort();
              return;
            }
            // The client calls `done` before returning when the request failed or was refused,
            // so a watch still unsettled here was answered 200 and streams events.
            this.options.onEvent?.({ type: "watching" });
          },
          (error: unknown) => settle(() => reject(error)),
        );
    });
  }
}
