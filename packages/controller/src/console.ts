/** Where a command writes: results to `out`, diagnostics to `err`, one line each. */
export interface Console {
  out(text: string): void;
  err(text: string): void;
}

/** The process's standard output and error. */
export const processConsole: Console = {
  out: (text) => process.stdout.write(`${text}\n`),
  err: (text) => process.stderr.write(`${text}\n`),
};
