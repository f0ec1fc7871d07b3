"""From a budget to a deployed model: the deployer (search, export, re-measure, manifest) and what it writes
(``outputs``), opening a bank for it (``setup``), the per-device reports (``reports``) and the end-to-end
quickstart (``quickstart``)."""
