"""Time into commands: the scheduler fires scheduled actions at their slots (the executor/ package runs their runs)."""
