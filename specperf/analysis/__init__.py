"""Pure functions of recorded numbers: statistics, metric extraction, gates. Imports neither torch nor pytest."""
