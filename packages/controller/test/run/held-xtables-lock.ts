/**
 * An xtables lock of the test's own, and a process that holds it: how `iptables-legacy-restore -w`
 * is made to wait on a real node (kube-proxy or an administrator holding the lock), without
 * stalling every other iptables-legacy user of the machine on /run/xtables.lock.
 */
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { eventually } from "@ipvs-node-controller/test-support";
import { execa, type ResultPromise } from "execa";

/** A private lock file; pass {@link XtablesLock.env} to the controller. */
export interface XtablesLock {
  /** `XTABLES_LOCKFILE`, which iptables-legacy honours. */
  readonly env: Readonly<Record<string, string>>;
  /** Whether some process holds the lock now. */
  held(): Promise<boolean>;
  /** Starts a process that takes the lock and keeps it; resolves once it holds it. */
  hold(): Promise<void>;
  /** Kills that process, which releases the lock; resolves once the lock is free. */
  release(): Promise<void>;
  /** Releases and removes the lock file. */
  dispose(): Promise<void>;
}

/** Creates a lock file in a temporary directory. */
export async function privateXtablesLock(): Promise<XtablesLock> {
  const dir = await mkdtemp(join(tmpdir(), "xtables-lock-"));
  const file = join(dir, "xtables.lock");
  await writeFile(file, "");
  let holder: ResultPromise | undefined;
  const held = async () =>
    (await execa("flock", ["-n", file, "true"], { reject: false })).exitCode !== 0;
  const release = async () => {
    if (holder === undefined) return;
    holder.kill("SIGKILL");
    await holder;
    holder = undefined;
    await eventually("the xtables lock is free", async () => !(await held()));
  };
  return {
    env: { XTABLES_LOCKFILE: file },
    held,
    async hold() {
      if (holder !== undefined) return;
      // --no-fork: the process holding the lock is the one release() kills; a forked child
      // would inherit the lock and keep it.
      holder = execa("flock", ["--no-fork", "-x", file, "sleep", "3600"], { reject: false });
      await eventually("the xtables lock is held", held);
    },
    release,
    async dispose() {
      await release();
      await rm(dir, { recursive: true, force: true });
    },
  };
}
