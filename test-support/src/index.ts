// Each fixture module re-exports itself here as it lands.
export {};
