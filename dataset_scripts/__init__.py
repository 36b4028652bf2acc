"""Dataset builders, the shared MRES schema and mask helpers."""
