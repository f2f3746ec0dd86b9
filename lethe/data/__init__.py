"""Documents, splits and chunks."""
