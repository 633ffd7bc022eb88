/**
 * Starting the kernel tools (nft, iptables-restore, ip, conntrack): the one place where
 * ipvs-node-controller creates processes.
 */
import { closeSync, mkdtempSync, openSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { execa } from "execa";
import { ToolNotStartedError, ToolTimedOutError } from "./errors.js";

/** What a finished process reported. A non-zero `exitCode` is returned, not thrown. */
export interface CommandResult {
  readonly stdout: string;
  readonly stderr: string;
  readonly exitCode: number;
}

/**
 * Runs one program with an argument array (never a shell), optionally feeding `input` on stdin.
 * Returns non-zero exits; throws `ToolNotStartedError` when the program cannot be started and
 * `ToolTimedOutError` when it had to be killed. Backends take one so that callers choose how
 * processes are started, e.g. inside another network namespace with `ip netns exec NAME` in tests.
 */
export type CommandRunner = (
  file: string,
  args: readonly string[],
  options?: { readonly input?: string },
) => Promise<CommandResult>;

/** Options of {@link createToolRunner}. */
export interface ToolRunnerOptions {
  /**
   * A tool still running after this long is killed (SIGTERM, then SIGKILL 2 s later) and the call
   * fails with a `ToolTimedOutError`: a tool that hangs (e.g. on a held xtables lock) must not
   * wedge the controller. Default 30 s.
   */
  readonly timeoutMs?: number;
}

/** The default limit: far above a full sync of 10,000 Services, far below a liveness timeout. */
export const DEFAULT_TOOL_TIMEOUT_MS = 30_000;

const KILL_GRACE_MS = 2_000;

/**
 * A read-only descriptor of an already unlinked file holding `input`, for use as stdin. Node
 * connects "piped" stdin through a socket, and `nft -j -f -` opens /dev/stdin, which fails on a
 * socket ("No such device or address"); a regular file works for every tool, and leaves nothing
 * behind.
 */
function stdinFile(input: string): number {
  const directory = mkdtempSync(join(tmpdir(), "ipvs-node-controller-"));
  const path = join(directory, "stdin");
  try {
    writeFileSync(path, input, { mode: 0o600 });
    return openSync(path, "r");
  } finally {
    rmSync(directory, { recursive: true, force: true });
  }
}

/**
 * Creates the runner every backend uses: an argument array (never a shell), stdin from a file,
 * the environment inherited (so `XTABLES_LOCKFILE` reaches iptables-legacy), non-zero exits
 * returned, a tool that cannot be started thrown as `ToolNotStartedError`, one that overruns its
 * time limit killed and thrown as `ToolTimedOutError`.
 */
export function createToolRunner(options: ToolRunnerOptions = {}): CommandRunner {
  const timeoutMs = options.timeoutMs ?? DEFAULT_TOOL_TIMEOUT_MS;
  if (!Number.isInteger(timeoutMs) || timeoutMs <= 0) {
    throw new RangeError(`timeoutMs must be a positive integer, got ${timeoutMs}`);
  }
  return async (file, args, runOptions) => {
    const stdin = runOptions?.input === undefined ? undefined : stdinFile(runOptions.input);
    const result = await execa(file, [...args], {
      // execa's types only list descriptors 0 and 3-9, but any open descriptor goes to spawn() as is.
      stdin: (stdin ?? "ignore") as "ignore",
      reject: false,
      stripFinalNewline: false,
      timeout: timeoutMs,
      forceKillAfterDelay: KILL_GRACE_MS,
    }).finally(() => {
      if (stdin !== undefined) closeSync(stdin);
    });
    if (result.timedOut) throw new ToolTimedOutError(file, timeoutMs);
    if (result.exitCode === undefined) {
      // Never started: the spawn error's code (ENOENT, EACCES) says why.
      const code = (result as { code?: string }).code;
      throw new ToolNotStartedError(file, code ?? result.shortMessage ?? "unknown reason");
    }
    return { stdout: result.stdout, stderr: result.stderr, exitCode: result.exitCode };
  };
}

/** The runner with the default time limit. */
export const runTool: CommandRunner = createToolRunner();
