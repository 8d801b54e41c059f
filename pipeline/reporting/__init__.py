"""Results for people: the backbone comparison, experiments side by side (the lr x batch
grid, the SR ablation) and the HTML report."""
