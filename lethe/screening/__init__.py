"""`lethe screen`: check a release against the victim's own data before fine-tuning on it."""
