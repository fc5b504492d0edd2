"""Everything that runs a model for the suite: cases, model and prompt store, timed runs, audit, step costs."""
