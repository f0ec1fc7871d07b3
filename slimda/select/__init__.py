"""Choosing a sub-network without target labels: budgets, UPEM, scoring on target images, evolutionary search."""
