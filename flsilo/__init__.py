"""flsilo: cross-silo federated learning between air-gapped sites, core library."""

__version__ = "0.1.0"
