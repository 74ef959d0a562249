"""The fleet simulator: many devices in one process, each with its own identity and the real core."""
