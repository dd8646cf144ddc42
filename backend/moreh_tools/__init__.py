"""moreh's command-line tools (moreh-smi, moreh-switch-model, moreh-log). They do not import torch: the flavor
table, flavor choice and config file come from the runtime through the small ``_native`` module."""
__version__ = "0.1.0"
