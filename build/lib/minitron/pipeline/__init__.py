"""The `minitron pipeline` command: every stage of a Minitron recipe in one run, with a report."""
