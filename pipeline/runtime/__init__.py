"""Where and how torch runs: device and precision, torchrun processes, resumable checkpoints."""
