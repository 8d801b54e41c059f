"""What a person runs that is no stage: the timed demo run, the lr x batch grid, the SR
ablation, the experiments page and the results table."""
