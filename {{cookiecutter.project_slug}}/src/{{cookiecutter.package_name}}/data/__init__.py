"""Data modules: each owns its split, its training statistics and its loaders."""
