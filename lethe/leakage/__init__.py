"""The Forget-to-Flourish leakage experiment."""
