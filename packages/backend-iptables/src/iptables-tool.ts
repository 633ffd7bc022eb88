/**
 * The iptables programs as this backend uses them: which variant, which four programs, reading
 * our part of a family's nat table, and restores that report a refusal instead of throwing it.
 */
import {
  BackendError,
  type CommandResult,
  type CommandRunner,
  ToolNotStartedError,
  ToolRefusedError,
} from "@ipvs-node-controller/backend";
import type { IpFamily } from "@ipvs-node-controller/core";
import { legacyTables } from "./legacy-tables.js";
import { EMPTY_STATE, type LiveState, parseNatSave } from "./state.js";
import {
  detectIptablesVariant,
  type IptablesBinaries,
  type IptablesMode,
  type IptablesVariant,
  type VariantDetection,
  variantBinaries,
} from "./variant.js";

/** How to find and start the programs; see `IptablesBackendOptions`. */
export interface IptablesToolOptions {
  readonly mode: IptablesMode;
  readonly binDir?: string;
  readonly binaries?: Partial<IptablesBinaries>;
  readonly runner: CommandRunner;
  readonly log: (message: string) => void;
}

/** The restore line that failed, quoted from the document when iptables names its number. */
function failedLine(stderr: string, document: string): string {
  const match = /line:? (\d+)/.exec(stderr);
  if (!match) return "";
  const line = document.split("\n")[Number(match[1]) - 1];
  return line === undefined ? "" : ` (line ${match[1]}: ${line})`;
}

function trimmed(text: string): string {
  return text.trim().split("\n").slice(0, 5).join(" | ");
}

/** One variant's four programs and the runner that starts them. */
export class IptablesTool {
  private detected: Promise<VariantDetection> | undefined;
  /** Families whose legacy nat table was seen to exist: it cannot go away, so look no more. */
  private readonly legacyNatSeen = new Set<IpFamily>();

  constructor(private readonly options: IptablesToolOptions) {}

  /** The variant in use: detected on the first call in `auto` mode, then cached. */
  async variant(): Promise<IptablesVariant> {
    const { mode } = this.options;
    return mode === "auto" ? (await this.detection()).variant : mode;
  }

  /**
   * The variant and why it was chosen: detected (without creating any table) on the first call,
   * then cached; `--iptables-mode` forcing one is a reason too.
   */
  detection(): Promise<Pick<VariantDetection, "variant" | "reason">> {
    const { mode, runner, binDir, log } = this.options;
    if (mode !== "auto")
      return Promise.resolve({ variant: mode, reason: "forced by --iptables-mode" });
    if (this.detected === undefined) {
      const detection = detectIptablesVariant(runner, binDir).then((found) => {
        log(`using iptables-${found.variant}: ${found.reason}`);
        return found;
      });
      this.detected = detection;
      // A failed detection (tools missing) is retried on the next call instead of cached.
      detection.catch(() => {
        if (this.detected === detection) this.detected = undefined;
      });
    }
    return this.detected;
  }

  /** The programs of the variant in use, explicit ones first. */
  async binaries(): Promise<IptablesBinaries> {
    return {
      ...variantBinaries(await this.variant(), this.options.binDir),
      ...this.options.binaries,
    };
  }

  /** The restore program of a family, for messages. */
  async restoreTool(family: IpFamily): Promise<string> {
    const b = await this.binaries();
    return family === "ipv4" ? b.iptablesRestore : b.ip6tablesRestore;
  }

  /**
   * Our part of a family's nat table. With iptables-legacy, a nat table that does not exist holds
   * nothing of ours and is not created by asking (see `legacyTables`).
   */
  async readState(family: IpFamily): Promise<LiveState> {
    if ((await this.variant()) === "legacy" && !(await this.legacyNatExists(family))) {
      return EMPTY_STATE;
    }
    const b = await this.binaries();
    const file = family === "ipv4" ? b.iptablesSave : b.ip6tablesSave;
    const result = await this.run(file, ["-t", "nat"]);
    if (result.exitCode !== 0) {
      throw new ToolRefusedError(
        `${file} -t nat failed with exit code ${result.exitCode}: ${trimmed(result.stderr)}`,
        file,
        result.exitCode,
        result.stderr.trim(),
      );
    }
    return parseNatSave(result.stdout);
  }

  /**
   * The state of a family that is not enabled: undefined when its table cannot be read (e.g. a
   * kernel without IPv6), so that such a family never fails a sync of the other one. A tool that
   * cannot be started at all is still an error.
   */
  async readStateIfPossible(family: IpFamily): Promise<LiveState | undefined> {
    try {
      return await this.readState(family);
    } catch (error) {
      if (error instanceof ToolNotStartedError || !(error instanceof BackendError)) throw error;
      this.options.log(
        `cannot read the ${family} nat table, leaving it alone: ${(error as Error).message}`,
      );
      return undefined;
    }
  }

  /**
   * Feeds one document to a family's `restore --noflush -w`, which applies it atomically or not at
   * all. Returns undefined when it was applied, and the refusal (not thrown: the caller decides
   * whether to fall back or fail) when the program exited non-zero. A program that cannot be
   * started or overruns its time limit throws.
   */
  async restore(family: IpFamily, document: string): Promise<ToolRefusedError | undefined> {
    const file = await this.restoreTool(family);
    const result = await this.run(file, ["--noflush", "-w"], document);
    if (result.exitCode === 0) return undefined;
    return new ToolRefusedError(
      `${file} refused the ${family} rules, nothing was changed for ${family}` +
        `${failedLine(result.stderr, document)}: ${trimmed(result.stderr)}`,
      file,
      result.exitCode,
      result.stderr.trim(),
    );
  }

  private async legacyNatExists(family: IpFamily): Promise<boolean> {
    if (this.legacyNatSeen.has(family)) return true;
    const tables = await legacyTables(this.options.runner, family);
    // Unknown: ask iptables-legacy-save, as if the list said yes.
    if (tables !== undefined && !tables.has("nat")) return false;
    if (tables !== undefined) this.legacyNatSeen.add(family);
    return true;
  }

  private async run(file: string, args: readonly string[], input?: string): Promise<CommandResult> {
    try {
      return await this.options.runner(file, args, input === undefined ? undefined : { input });
    } catch (error) {
      if (error instanceof BackendError) throw error;
      throw new ToolNotStartedError(file, error instanceof Error ? error.message : String(error));
    }
  }
}
