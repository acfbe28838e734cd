"""Tests of the generated project; `pytest` runs them offline on the CPU."""
