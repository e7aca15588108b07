"""Training: typed run configs, optimizer and schedule, atomic checkpoints, exact resume."""
