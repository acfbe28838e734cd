"""The project's package: the command line is in ``cli``, the training system in ``system``."""
