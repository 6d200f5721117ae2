"""The local server's routes, one module per concern over one shared ``ServerState``."""
