"""The write side: load an aggregate, let it decide, save its events."""
