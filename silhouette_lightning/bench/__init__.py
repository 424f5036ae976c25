"""`train.py benchmark`: variants run side by side, the recovery experiment, the comparison pages."""
