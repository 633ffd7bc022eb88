/**
 * Waiting for something that happens asynchronously: a controller programming the kernel, a
 * watch event arriving, a retry firing.
 */

/**
 * Polls `probe` every `intervalMs` until it returns true; after `timeoutMs` it throws an error that
 * names `what` was awaited.
 *
 * @example
 * await eventually("the pod reaches web", () => answers("192.0.2.10", 80, "web"));
 */
export async function eventually(
  what: string,
  probe: () => boolean | Promise<boolean>,
  timeoutMs = 20_000,
  intervalMs = 50,
): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await probe())) {
    if (Date.now() > deadline) {
      throw new Error(`timed out after ${timeoutMs} ms waiting until ${what}`);
    }
    await new Promise((resolve) => setTimeout(resolve, intervalMs));
  }
}
