/** Types of parse-prometheus-text-format, which ships none: what its README documents. */
declare module "parse-prometheus-text-format" {
  /** One sample of a counter, gauge or untyped metric; histograms and summaries have more fields. */
  export interface ParsedMetric {
    readonly value?: string;
    readonly labels?: Record<string, string>;
  }
  /** One metric family: its name, HELP, TYPE (upper case) and samples. */
  export interface ParsedFamily {
    readonly name: string;
    readonly help: string;
    readonly type: "COUNTER" | "GAUGE" | "HISTOGRAM" | "SUMMARY" | "UNTYPED";
    readonly metrics: readonly ParsedMetric[];
  }
  /** Parses Prometheus' text exposition format. */
  export default function parsePrometheusTextFormat(text: string): ParsedFamily[];
}
