/**
 * HTTP requests made from inside a network namespace, e.g. to a controller's health and metrics
 * endpoints bound to that namespace's loopback.
 */
import type { CommandRunner } from "@ipvs-node-controller/backend";

/** What an HTTP GET returned; `status` 0 when no response came (the body then holds the error). */
export interface HttpAnswer {
  readonly status: number;
  readonly body: string;
}

// Runs inside the namespace: prints the status on the first line, then the body.
const GET_PROGRAM = `
fetch(process.argv[1]).then(
  async (response) => process.stdout.write(response.status + "\\n" + (await response.text())),
  (error) => process.stdout.write("0\\n" + ((error.cause && error.cause.message) || error.message)),
);
`;

/** GETs `url` with a Node.js process started by `runner` (e.g. a topology's `runner("node")`). */
export async function httpGet(runner: CommandRunner, url: string): Promise<HttpAnswer> {
  const { stdout } = await runner(process.execPath, ["-e", GET_PROGRAM, url]);
  const newline = stdout.indexOf("\n");
  return { status: Number(stdout.slice(0, newline)), body: stdout.slice(newline + 1) };
}
