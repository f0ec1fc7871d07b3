"""One training run: its configuration, the adaptation objectives, SEED/OSTC, the trainer and its run folder."""
