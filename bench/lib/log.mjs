// Progress on stderr, with the seconds since the report started (inherited by child processes),
// so that a long run shows where its time goes.

const started = Number(process.env.BENCH_STARTED_AT ?? Date.now());
process.env.BENCH_STARTED_AT = String(started);

/** Prints `message` under `part`. */
export function log(part, message) {
  const seconds = ((Date.now() - started) / 1000).toFixed(0).padStart(5);
  process.stderr.write(`[${seconds} s] ${part}: ${message}\n`);
}

/** Resolves after `ms`. */
export const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));
