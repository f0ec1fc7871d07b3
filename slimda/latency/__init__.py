"""Per-device latency lookup tables: block slots and shape keys (plan), the table and its predictions
(table), building it on a device (build) and checking it against whole networks (validate)."""
