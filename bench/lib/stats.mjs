// Summaries of samples. Percentiles use the nearest-rank method: p99 of 50 samples is the
// largest, so a p99 is never smaller than a measured value.

const round = (value, digits = 2) => Number(value.toFixed(digits));

/** The `p`-th percentile (0 < p ≤ 100) of `values`, by nearest rank. */
export function percentile(values, p) {
  if (values.length === 0) return Number.NaN;
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.max(0, Math.ceil((p / 100) * sorted.length) - 1)];
}

/** n, p50, p90, p99, min, max and mean of `values`, rounded to `digits` decimals. */
export function summarize(values, digits = 2) {
  const n = values.length;
  if (n === 0) return { n: 0 };
  const mean = values.reduce((sum, value) => sum + value, 0) / n;
  return {
    n,
    p50: round(percentile(values, 50), digits),
    p90: round(percentile(values, 90), digits),
    p99: round(percentile(values, 99), digits),
    min: round(Math.min(...values), digits),
    max: round(Math.max(...values), digits),
    mean: round(mean, digits),
  };
}

/** The median of `values`. */
export const median = (values) => percentile(values, 50);

export { round };
