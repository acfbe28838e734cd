"""Template regression tests."""
