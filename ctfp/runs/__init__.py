"""Run folders and end-to-end runs: the format, task 1, task 2, saved models, archive scoring."""
