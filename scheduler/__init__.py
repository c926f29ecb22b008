"""Time into commands: the scheduler fires scheduled actions, the executor runs their runs."""
