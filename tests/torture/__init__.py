"""The torture suite: engines under SIGKILL, SIGSTOP, database outages and hanging tasks."""
