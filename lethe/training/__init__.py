"""Runs that train a model with the engine on data of their own: pre-training from scratch (and its exact
retrain), the known-members target on a pre-trained LLM, and the victim's fine-tuning."""
