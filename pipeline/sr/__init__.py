"""Super-resolution: LR/HR pairs, ESRGAN training (networks, steps, the loop), quality
against bicubic, and tiled inference."""
