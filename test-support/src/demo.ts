/**
 * The ipvs-node-controller demo: reproduces the IPVS `externalTrafficPolicy: Local` hole in
 * throwaway network namespaces, runs the controller's `sync --once`, and shows the fix.
 *
 *   node test-support/dist/demo.js --cli <path of ipvs-node-controller> [--backend nft|iptables]
 *
 * Needs root (network namespaces). Everything it creates is removed before it exits.
 */
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { parseArgs } from "node:util";
import { ADDRESS_PLAN, createTopology, type Host, type Topology } from "./netns.js";

const SERVICE = {
  name: "shop/web",
  port: 80,
  lb: { ipv4: "192.0.2.10", ipv6: "2001:db8:10::10" },
  cluster: { ipv4: "10.96.0.10", ipv6: "fd00:10:96::10" },
};

/**
 * A second Service whose LB IPs the node does not own, as on a node where kube-proxy runs in
 * iptables or nftables mode: the load balancer (here the remote host) serves them.
 */
const ELSEWHERE = {
  name: "shop/api",
  lb: { ipv4: "192.0.2.20", ipv6: "2001:db8:10::20" },
  cluster: { ipv4: "10.96.0.20", ipv6: "fd00:10:96::20" },
};

/** A Service as `kubectl get svc -o json` would print it once MetalLB assigned its IPs. */
function serviceObject(service: typeof SERVICE | typeof ELSEWHERE) {
  const [namespace, name] = service.name.split("/");
  return {
    apiVersion: "v1",
    kind: "Service",
    metadata: { namespace, name, creationTimestamp: "2024-01-01T00:00:00Z" },
    spec: {
      type: "LoadBalancer",
      externalTrafficPolicy: "Local",
      ipFamilyPolicy: "PreferDualStack",
      clusterIP: service.cluster.ipv4,
      clusterIPs: [service.cluster.ipv4, service.cluster.ipv6],
      ports: [{ name: "http", port: SERVICE.port, protocol: "TCP", targetPort: 8080 }],
    },
    status: { loadBalancer: { ingress: [{ ip: service.lb.ipv4 }, { ip: service.lb.ipv6 }] } },
  };
}

const LOAD_BALANCER_REPLY = "hello from the load balancer";

const WHO: Record<Host, string> = {
  pod: "pod on this node      ",
  node: "host-network process  ",
  remote: "client outside the node",
};

/** What a probe must see: a refusal, or a reply containing this text. */
type Expectation = "refused" | { readonly answer: string };

async function probe(
  topology: Topology,
  from: Host,
  ip: string,
  expected: Expectation,
): Promise<boolean> {
  const result = await topology.connect(from, ip, SERVICE.port, "tcp");
  const shown = result.ok ? `answered "${result.reply}"` : `failed: ${result.error}`;
  const good =
    expected === "refused"
      ? !result.ok && result.error === "refused"
      : result.ok && result.reply === expected.answer;
  const target = ip.includes(":") ? `[${ip}]:${SERVICE.port}` : `${ip}:${SERVICE.port}`;
  console.log(`  ${good ? "ok " : "BAD"} ${WHO[from]} -> ${target.padEnd(22)} ${shown}`);
  return good;
}

async function runCli(topology: Topology, cli: string, args: string[]): Promise<void> {
  console.log(`  $ ipvs-node-controller ${args.join(" ")}`);
  const result = await topology.runner("node")(cli, args);
  for (const line of `${result.stdout}${result.stderr}`.trim().split("\n")) {
    if (line !== "") console.log(`    ${line}`);
  }
  if (result.exitCode !== 0) throw new Error(`ipvs-node-controller exited with ${result.exitCode}`);
}

async function showRules(topology: Topology, backend: string): Promise<void> {
  const [file, args] =
    backend === "nft"
      ? ["nft", ["list", "table", "inet", "ipvs-node-controller"]]
      : ["iptables-save", ["-t", "nat"]];
  const result = await topology.runner("node")(file, args);
  console.log(`  $ ${file} ${args.join(" ")}`);
  for (const line of result.stdout.trim().split("\n")) {
    if (backend === "nft" || /IPVSNC|^\*|PREROUTING|OUTPUT/.test(line)) console.log(`    ${line}`);
  }
}

async function main(): Promise<number> {
  const { values } = parseArgs({
    options: {
      backend: { type: "string", default: "nft" },
      cli: { type: "string", default: "ipvs-node-controller" },
    },
  });
  const backend = values.backend as string;
  if (backend !== "nft" && backend !== "iptables") {
    console.error(`error: --backend must be nft or iptables, not ${JSON.stringify(backend)}`);
    return 2;
  }
  const cli = values.cli as string;
  const families = ["ipv4", "ipv6"] as const;

  const topology = await createTopology({ prefix: "demo" });
  const workdir = await mkdtemp(join(tmpdir(), "ipvs-node-controller-demo-"));
  try {
    console.log(
      `\nA node in kube-proxy IPVS mode, emulated in network namespace ${topology.namespaces.node}:`,
    );
    console.log(
      `  Service ${SERVICE.name}, type LoadBalancer, externalTrafficPolicy: Local, port ${SERVICE.port}`,
    );
    console.log(
      `  LB IPs ${SERVICE.lb.ipv4}, ${SERVICE.lb.ipv6} bound on the node (as on kube-ipvs0), no local endpoint`,
    );
    console.log(
      `  cluster IPs ${SERVICE.cluster.ipv4}, ${SERVICE.cluster.ipv6} answer (standing in for IPVS)`,
    );
    await topology.addNodeAddresses([
      ...Object.values(SERVICE.lb),
      ...Object.values(SERVICE.cluster),
    ]);
    console.log(
      `  Service ${ELSEWHERE.name}: LB IPs ${ELSEWHERE.lb.ipv4}, ${ELSEWHERE.lb.ipv6} not bound on the node, served by the load balancer`,
    );
    console.log(
      "    (what every LB IP looks like where kube-proxy runs in iptables or nftables mode)",
    );
    await topology.addNodeAddresses(Object.values(ELSEWHERE.cluster));
    await topology.listen(
      families.flatMap((family) =>
        [SERVICE, ELSEWHERE].map((service) => ({
          ip: service.cluster[family],
          port: SERVICE.port,
          protocol: "tcp" as const,
          reply: `hello from ${service.name}`,
        })),
      ),
    );
    await topology.addRemoteAddresses(Object.values(ELSEWHERE.lb));
    await topology.listen(
      families.map((family) => ({
        ip: ELSEWHERE.lb[family],
        port: SERVICE.port,
        protocol: "tcp" as const,
        reply: LOAD_BALANCER_REPLY,
      })),
      "remote",
    );

    let good = true;
    console.log(
      "\n1. Without the controller, traffic from the node itself to the LB IP is dropped (the bug):",
    );
    for (const family of families) {
      for (const from of ["pod", "node", "remote"] as const) {
        good = (await probe(topology, from, SERVICE.lb[family], "refused")) && good;
      }
    }

    const servicesFile = join(workdir, "services.json");
    await writeFile(
      servicesFile,
      JSON.stringify({
        apiVersion: "v1",
        kind: "List",
        items: [serviceObject(SERVICE), serviceObject(ELSEWHERE)],
      }),
    );
    console.log(`\n2. The controller programs the node (${backend} backend):`);
    await runCli(topology, cli, [
      "sync",
      "--once",
      `--backend=${backend}`,
      `--services=${servicesFile}`,
      `--pod-cidr=${ADDRESS_PLAN.podCIDR.ipv4}`,
      `--pod-cidr=${ADDRESS_PLAN.podCIDR.ipv6}`,
      "--net-stack=ipv4,ipv6",
    ]);
    await showRules(topology, backend);

    console.log(
      "\n3. With the controller, pods and host processes reach the Service; outside traffic is untouched:",
    );
    const fixed = { answer: `hello from ${SERVICE.name}` };
    for (const family of families) {
      good = (await probe(topology, "pod", SERVICE.lb[family], fixed)) && good;
      good = (await probe(topology, "node", SERVICE.lb[family], fixed)) && good;
      good = (await probe(topology, "remote", SERVICE.lb[family], "refused")) && good;
    }
    console.log(
      "\n   LB IPs that are not addresses of the node are left alone: traffic still reaches the load balancer:",
    );
    const untouched = { answer: LOAD_BALANCER_REPLY };
    for (const family of families) {
      good = (await probe(topology, "pod", ELSEWHERE.lb[family], untouched)) && good;
      good = (await probe(topology, "node", ELSEWHERE.lb[family], untouched)) && good;
    }

    console.log("\n4. Cleaning up:");
    await runCli(topology, cli, ["cleanup", `--backend=${backend}`]);
    console.log(
      good
        ? "\nDemo passed: the bug reproduced and the fix works.\n"
        : "\nDemo FAILED: see the BAD lines above.\n",
    );
    return good ? 0 : 1;
  } finally {
    await topology.destroy();
    await rm(workdir, { recursive: true, force: true });
  }
}

main().then(
  (code) => {
    process.exitCode = code;
  },
  (error: unknown) => {
    console.error(`error: ${(error as Error).message}`);
    process.exitCode = 1;
  },
);
