"""HTTP: translates requests to commands and queries, and their outcomes back to HTTP."""
