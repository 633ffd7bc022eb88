/**
 * The arm64 image, run on this machine under QEMU's user-mode emulation (binfmt_misc, enabled by
 * scripts/emulation.sh for the suite and disabled again after it if it was off before).
 * `scripts/image.sh --platform linux/arm64` builds it, its base included, from Debian's arm64
 * packages.
 *
 * What runs emulated: the image's Node.js and the whole controller (`--version`, `render`,
 * `sync --once`, `cleanup`), its shell, and `ip`, whose netlink protocol (NETLINK_ROUTE) QEMU
 * translates. What cannot: QEMU's user mode refuses every other netlink protocol and netfilter's
 * socket options, so the image's nft, iptables and conntrack cannot talk to the kernel here; the
 * suite checks exactly how they fail. For `sync --once` and `cleanup` the emulated controller
 * therefore runs this machine's own nft and iptables, through `--nft-path` and
 * `--iptables-bin-dir` (wrappers that start them with this machine's dynamic loader), on a node
 * network namespace with real traffic checked as in image.test.ts.
 */
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import {
  ADDRESS_PLAN,
  acquireEmulation,
  createTopology,
  type ProbeResult,
  type Topology,
} from "@ipvs-node-controller/test-support";
import { execa } from "execa";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { builtCli } from "../support/built-cli.js";
import { loadBalancerService } from "../support/node-fixture.js";
import {
  buildImage,
  containerName,
  docker,
  imageTestsEnabled,
  mib,
  PACKAGE_VERSION,
  removeStaleContainers,
  startNodeContainer,
} from "./docker.js";

const CLI = builtCli();

const LB_IP = "192.0.2.10";
const CLUSTER_IP = "10.96.0.10";
/** Where this machine's /usr is mounted in the containers that run its kernel tools. */
const NATIVE_USR = "/native/usr";
const NATIVE_TOOLS = "/native/tools";
const NATIVE_PROGRAMS = [
  "nft",
  ...["iptables", "ip6tables"].flatMap((family) =>
    ["legacy", "nft"].flatMap((variant) =>
      ["save", "restore"].map((verb) => `${family}-${variant}-${verb}`),
    ),
  ),
];

const enabled = await imageTestsEnabled("image-arm64.test.ts", { envtest: false });

// Limits, never measurements: an emulated Node.js takes 10 to 30 s to start on a busy 2-core
// machine, and each test starts one to three.

/** The e_machine field of an ELF header, as `od -t x1` prints its two bytes. */
const AARCH64 = "b7 00";

describe.skipIf(!enabled)("the arm64 image under emulation", () => {
  let releaseEmulation: (() => Promise<void>) | undefined;
  let image = "";
  let scratch = "";
  let nativeTools = "";
  let node = "";
  let topology: Topology;
  const containers: string[] = [];

  const services = {
    apiVersion: "v1",
    kind: "List",
    items: [
      {
        ...loadBalancerService("web", CLUSTER_IP),
        status: { loadBalancer: { ingress: [{ ip: LB_IP }] } },
      },
    ],
  };

  /** `docker run --rm` of the image with `args` after the entrypoint; resolves with everything. */
  const runImage = (runArgs: readonly string[], args: readonly string[]) =>
    execa("docker", ["run", "--rm", "--platform=linux/arm64", ...runArgs, image, ...args], {
      reject: false,
      stdin: "ignore",
    });

  /** In the node's network namespace, with this machine's kernel tools at hand. */
  const inNode = (entrypoint: string, args: readonly string[]) =>
    runImage(
      [
        `--network=container:${node}`,
        "--cap-drop=ALL",
        "--cap-add=NET_ADMIN",
        // As the iptables overlay: iptables-legacy opens a raw socket.
        "--cap-add=NET_RAW",
        `--mount=type=bind,source=/usr,destination=${NATIVE_USR},readonly`,
        `--mount=type=bind,source=${nativeTools},destination=${NATIVE_TOOLS},readonly`,
        `--mount=type=bind,source=${scratch},destination=/input,readonly`,
        `--entrypoint=${entrypoint}`,
      ],
      args,
    );
  /** The controller in the node's network namespace. */
  const controller = (...args: string[]) => inNode("ipvs-node-controller", args);

  const connect = (from: "pod" | "node" | "remote"): Promise<ProbeResult> =>
    topology.connect(from, LB_IP, 80, "tcp", { timeoutMs: 2000 });

  beforeAll(async () => {
    releaseEmulation = await acquireEmulation("arm64");
    image = await buildImage(["--platform", "linux/arm64"]);
    await removeStaleContainers();
    scratch = mkdtempSync(join(tmpdir(), "image-arm64-"));
    writeFileSync(join(scratch, "services.json"), JSON.stringify(services));
    // Each wrapper starts this machine's program of the same name with this machine's loader and
    // libraries, all under NATIVE_USR; iptables-nft also needs its extensions from there.
    nativeTools = join(scratch, "tools");
    const libraries = `${NATIVE_USR}/lib/x86_64-linux-gnu`;
    for (const program of NATIVE_PROGRAMS) {
      writeFileSync(
        join(scratch, `tools-${program}`),
        `#!/bin/sh\nXTABLES_LIBDIR=${libraries}/xtables exec ${libraries}/ld-linux-x86-64.so.2 --library-path ${libraries} ${NATIVE_USR}/sbin/${program} "$@"\n`,
        { mode: 0o755 },
      );
    }
    await execa("sh", [
      "-c",
      `mkdir "$1" && for f in "$1"-*; do mv "$f" "$1/\${f##*/tools-}"; done`,
      "sh",
      nativeTools,
    ]);

    node = containerName("arm64-node");
    containers.push(node);
    const pid = await startNodeContainer(image, node, ["--platform=linux/arm64"]);
    topology = await createTopology({ prefix: "arm", nodePid: pid });
    await topology.addNodeAddresses([LB_IP, CLUSTER_IP]);
    await topology.listen([{ ip: CLUSTER_IP, port: 80, protocol: "tcp", reply: "web" }]);
  }, 3_600_000);

  afterAll(async () => {
    await topology?.destroy();
    if (containers.length > 0) {
      await execa("docker", ["rm", "--force", ...containers], { reject: false });
    }
    if (scratch) rmSync(scratch, { recursive: true, force: true });
    await releaseEmulation?.();
  }, 120_000);

  it("is a linux/arm64 image whose programs are aarch64 and whose JavaScript is the same for every architecture", async () => {
    expect(await docker(["image", "inspect", "--format={{.Os}}/{{.Architecture}}", image])).toBe(
      "linux/arm64",
    );
    expect(image).toBe(`ipvs-node-controller:${PACKAGE_VERSION}-arm64`);
    const programs = ["node", "nft", "iptables-nft-restore", "iptables-legacy-restore", "ip"];
    // The ELF header's machine field of each program the controller runs, and everything under
    // /opt that would tie the controller's files to one architecture: native code, or packages
    // declaring the CPUs or systems they support (optional dependencies picked per platform).
    const script = `
      for program in "$@"; do
        printf 'machine %s %s\\n' "$program" "$(od -A n -t x1 -j 18 -N 2 "$(readlink -f "$(command -v "$program")")" | tr -s ' ' | sed 's/^ //')"
      done
      find /opt -type f \\( -name '*.node' -o -name '*.so' -o -name '*.so.*' \\) | sed 's/^/native /'
      find /opt -type f -perm -u+x ! -name '*.js' ! -name '*.cjs' ! -name '*.mjs' ! -name '*.sh' \\
        -exec sh -c 'head -c 4 "$1" | od -A n -c | grep -q "177   E   L   F" && echo "elf $1"' sh {} \\;
      find /opt -name package.json -exec grep -l '"cpu"\\|"os"' {} + | sed 's/^/restricted /'
      uname -m | sed 's/^/uname /'
    `;
    const result = await runImage(
      ["--network=none", "--entrypoint=/bin/sh"],
      ["-c", script, "sh", ...programs],
    );
    expect(result.exitCode, result.stderr).toBe(0);
    const lines = result.stdout.split("\n");
    const field = (kind: string) =>
      lines
        .filter((line) => line.startsWith(`${kind} `))
        .map((line) => line.slice(kind.length + 1));
    expect(field("machine")).toEqual(programs.map((program) => `${program} ${AARCH64}`));
    expect(field("uname")).toEqual(["aarch64"]);
    expect(field("native")).toEqual([]);
    expect(field("elf")).toEqual([]);
    expect(field("restricted")).toEqual([]);
    const size = Number(await docker(["image", "inspect", "--format={{.Size}}", image]));
    console.log(`image ${image}: ${mib(size)}`);
  }, 300_000);

  it("--version prints the package's version", async () => {
    const result = await runImage(
      ["--network=none", "--read-only", "--cap-drop=ALL"],
      ["--version"],
    );
    expect(result.exitCode, result.stderr).toBe(0);
    expect(result.stdout.trim()).toBe(PACKAGE_VERSION);
  }, 300_000);

  /**
   * Runs each command in one container (each container costs a copy of the image and an emulated
   * start): its exit status, stdout and stderr.
   */
  async function eachIn(
    run: (script: string, commands: readonly string[]) => ReturnType<typeof runImage>,
    commands: readonly string[],
  ): Promise<{ exitCode: number; stdout: string; stderr: string }[]> {
    // One line a command: status, stdout and stderr in base64, separated by colons.
    const script = `
      for command in "$@"; do
        sh -c "$command" >/tmp/out 2>/tmp/err
        printf '%s' "$?" | base64 -w0; printf ':'
        base64 -w0 </tmp/out; printf ':'
        base64 -w0 </tmp/err; printf '\\n'
      done
    `;
    const result = await run(script, commands);
    expect(result.exitCode, result.stderr).toBe(0);
    const lines = result.stdout.replace(/\n$/, "").split("\n");
    expect(lines).toHaveLength(commands.length);
    return lines.map((line) => {
      const [code, stdout, stderr] = line
        .split(":")
        .map((part) => Buffer.from(part, "base64").toString("utf8"));
      return {
        exitCode: Number(code),
        stdout: stdout as string,
        stderr: (stderr as string).trimEnd(),
      };
    });
  }

  it("render prints what this machine's build prints, for each backend", async () => {
    const args = (backend: string) => [
      "render",
      `--backend=${backend}`,
      `--pod-cidr=${ADDRESS_PLAN.podCIDR.ipv4}`,
    ];
    const backends = ["nft", "iptables"];
    const emulated = await eachIn(
      (script, commands) =>
        runImage(
          [
            "--network=none",
            "--tmpfs=/tmp",
            "--read-only",
            "--cap-drop=ALL",
            `--mount=type=bind,source=${scratch},destination=/input,readonly`,
            "--entrypoint=sh",
          ],
          ["-c", script, "sh", ...commands],
        ),
      backends.map(
        (backend) =>
          `ipvs-node-controller ${args(backend).join(" ")} --services=/input/services.json`,
      ),
    );
    for (const [index, backend] of backends.entries()) {
      const native = await execa(process.execPath, [
        CLI,
        ...args(backend),
        `--services=${join(scratch, "services.json")}`,
      ]);
      expect(emulated[index]?.exitCode, emulated[index]?.stderr).toBe(0);
      // execa strips one final newline of what it reads, as it did for the native run.
      expect(emulated[index]?.stdout.replace(/\n$/, ""), backend).toBe(native.stdout);
      expect(native.stdout).toContain(LB_IP);
    }
  }, 300_000);

  it("its own ip talks to the kernel under emulation; its nft, iptables and conntrack cannot", async () => {
    // QEMU refuses socket(AF_NETLINK, SOCK_RAW, NETLINK_NETFILTER) with EPROTONOSUPPORT, which
    // nft, iptables-nft and conntrack need; and getsockopt(SOL_IP, IPT_SO_GET_INFO), which
    // iptables-legacy needs, with ENOPROTOOPT ("iptables who?"). NETLINK_ROUTE, which ip uses,
    // is one of the protocols it translates. This machine's nft, started from the same container
    // and namespace, talks to the kernel: the limit is the emulator's, not the container's.
    const expected = {
      "ip -4 -o address show dev lo": { exitCode: 0, stderr: "" },
      "nft list ruleset": {
        exitCode: 3,
        stderr: "mnl.c:60: Unable to initialize Netlink socket: Protocol not supported",
      },
      "iptables-nft-save": {
        exitCode: 1,
        stderr:
          "iptables-nft-save/1.8.11 (nf_tables) Failed to initialize nft: Protocol not supported",
      },
      "iptables-legacy-save -t nat": {
        exitCode: 1,
        stderr:
          "iptables-save v1.8.11 (legacy): Cannot initialize: iptables who? (do you need to insmod?)",
      },
      "conntrack -L": {
        exitCode: 1,
        stderr:
          "mnl_socket_open: Protocol not supported\nconntrack v1.4.8 (conntrack-tools): Can't open handler",
      },
      [`${NATIVE_TOOLS}/nft list ruleset`]: { exitCode: 0, stderr: "" },
    };
    const commands = Object.keys(expected);
    const results = await eachIn(
      (script, all) => inNode("sh", ["-c", script, "sh", ...all]),
      commands,
    );
    for (const [index, command] of commands.entries()) {
      const result = results[index];
      expect({ exitCode: result?.exitCode, stderr: result?.stderr }, command).toEqual(
        expected[command as keyof typeof expected],
      );
    }
    expect(results[0]?.stdout).toContain(`${LB_IP}/32`);
  }, 300_000);

  describe.each(["nft", "iptables"])("sync --once and cleanup with the %s backend", (backend) => {
    const tools =
      backend === "nft"
        ? [`--nft-path=${NATIVE_TOOLS}/nft`]
        : [`--iptables-bin-dir=${NATIVE_TOOLS}`];

    it("without rules, the LB IP is refused on the node (the bug)", async () => {
      expect(await connect("pod")).toEqual({ ok: false, error: "refused" });
      expect(await connect("node")).toEqual({ ok: false, error: "refused" });
    });

    it("sync --once fixes pod and host traffic and leaves traffic from elsewhere alone", async () => {
      const result = await controller(
        "sync",
        "--once",
        `--backend=${backend}`,
        ...tools,
        "--services=/input/services.json",
        `--pod-cidr=${ADDRESS_PLAN.podCIDR.ipv4}`,
      );
      expect(result.exitCode, result.stderr).toBe(0);
      expect(result.stderr).toMatch(new RegExp(`applied 1 mappings with ${backend}`));
      expect(await connect("pod")).toEqual({ ok: true, reply: "web" });
      expect(await connect("node")).toEqual({ ok: true, reply: "web" });
      expect(await connect("remote")).toEqual({ ok: false, error: "refused" });
    }, 300_000);

    it("cleanup removes the rules: the bug is back", async () => {
      const result = await controller("cleanup", `--backend=${backend}`, ...tools);
      expect(result.exitCode, result.stderr).toBe(0);
      expect(result.stderr).toContain(`removed the ${backend} rules`);
      expect(await connect("pod")).toEqual({ ok: false, error: "refused" });
      expect(await connect("node")).toEqual({ ok: false, error: "refused" });
    }, 300_000);
  });
});
