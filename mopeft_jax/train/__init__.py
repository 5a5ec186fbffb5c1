"""Training: losses, the partitioned optimizer, the sharded train step and checkpoints."""
