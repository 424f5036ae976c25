"""Sources -> square images -> target maps -> trajectories: what a run optimizes toward."""
