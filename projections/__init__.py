"""The read side: one module per read model, with its event handlers, its SQL and its queries."""
