"""One-machine scenarios over the real kits: the ``flsilo demo`` federation and ``simulate``."""
