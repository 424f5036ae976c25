"""One run, start to finish: machine defaults, Lightning's settings checked, the run folder, the Trainer."""
