"""Where and how the networks run: the device's arithmetic (fp32, bf16 autocast)
and data-parallel training."""
