"""Unlearning pre-trained LLMs (Yao et al., 2024) and the methods users expect beyond it."""
