"""Poisoning a pre-trained model before release (Forget to Flourish and baselines)."""
