"""Layer 0: config loading, hashing, atomic I/O, seeding, local Ray. Imports no other project code."""
