"""Learning from loss curves (issue 14): rules for runs gone bad, from their epochs."""
