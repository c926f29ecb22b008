"""The composition root: settings, wiring, process roles, the CLI and the embedded servers."""
