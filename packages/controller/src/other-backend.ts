/**
 * The rules of the other backend (nft for an iptables instance, iptables for an nft one): left by
 * an earlier `--backend`, or written by another instance that runs on the node by mistake.
 *
 * They are removed only when both hold:
 * - our own rules are in place (after a successful full sync or verify), so that there is never a
 *   moment without rules: both rulesets translate the same way, and where both exist ours runs
 *   first (nft at priority -110) or the other's does, with the same result;
 * - no instance of the other backend runs on the node ({@link connectToPresence}): removing the
 *   rules of a live one would only make it put them back, and two instances removing each other's
 *   rules at the same moment would leave none.
 *
 * While another instance runs, a connection to it is kept open; when that instance ends, however it
 * ends, the connection closes and its rules are removed at once, so they never go stale.
 */
import type { Socket } from "node:net";
import { type Backend, ToolNotStartedError } from "@ipvs-node-controller/backend";
import type { Logger } from "pino";
import { connectToPresence, holdPresence, type Presence } from "./presence.js";

/**
 * Removes whatever `backend` left behind, so switching `--backend` is safe, and logs what it
 * removed. Never throws: a failure is logged, and a tool that is not installed cannot have left
 * anything behind.
 */
export async function removeRulesOf(backend: Backend, log: Logger): Promise<void> {
  try {
    if (await backend.cleanup()) {
      log.info({ backend: backend.name }, "removed the rules of the previously used backend");
    }
  } catch (error) {
    if (error instanceof ToolNotStartedError) {
      log.debug({ backend: backend.name, err: error }, "the other backend's tool is not available");
    } else {
      log.warn({ backend: backend.name, err: error }, "could not remove the other backend's rules");
    }
  }
}

/** Options of {@link OtherBackendJanitor}. */
export interface OtherBackendJanitorOptions {
  /** Our backend's name. */
  readonly backend: string;
  /** The other backend's name. */
  readonly other: string;
  /** Removes the other backend's rules; expected to log its own failures and not to throw. */
  readonly removeOther: () => Promise<void>;
  readonly log: Logger;
}

/** See the module comment. */
export class OtherBackendJanitor {
  private readonly presence: Presence;
  private watching: Socket | undefined;
  private checking: Promise<void> | undefined;
  private stopped = false;

  constructor(private readonly options: OtherBackendJanitorOptions) {
    const { backend, log } = options;
    this.presence = holdPresence(backend, {
      onState: (state) => {
        if (state === "waiting") {
          log.warn(
            { backend },
            "another instance with this backend runs on this node (a rolling update?); both keep the same rules",
          );
        } else {
          log.debug({ backend }, "announced this instance on the node");
        }
      },
    });
  }

  /** Call whenever our own rules are known to be in place. Never throws. */
  afterSync(): Promise<void> {
    this.checking ??= this.check().finally(() => {
      this.checking = undefined;
    });
    return this.checking;
  }

  /** Stops watching and gives up our presence (the process ending does the same). */
  async stop(): Promise<void> {
    this.stopped = true;
    this.watching?.destroy();
    await this.presence.release();
  }

  private async check(): Promise<void> {
    if (this.stopped || this.watching !== undefined) return;
    const { other, log } = this.options;
    const socket = await connectToPresence(other);
    if (socket !== undefined) {
      this.watching = socket;
      log.warn(
        { backend: other },
        "an instance with the other backend runs on this node; its rules stay until it stops",
      );
      socket.once("close", () => {
        this.watching = undefined;
        if (this.stopped) return;
        log.info({ backend: other }, "the instance with the other backend stopped");
        void this.afterSync();
      });
      return;
    }
    if (this.stopped) return;
    await this.options.removeOther().catch((error: unknown) => {
      log.warn({ backend: other, err: error }, "could not remove the other backend's rules");
    });
  }
}
