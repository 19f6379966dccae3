"""Built-in models and the registry that builds any model from its spec string."""
