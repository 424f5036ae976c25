"""Records, tables, pictures, plots, statistics and reports: what a run leaves on disk (no Lightning)."""
