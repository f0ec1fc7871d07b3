"""Domains (built-in digit sets, ImageFolder trees) and the preprocessing a bank is trained and deployed with."""
