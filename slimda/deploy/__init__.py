"""From a budget to a deployed model: the deployer (search, export, re-measure, manifest) and the reports."""
