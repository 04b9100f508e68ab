"""Fitting a line profile: calibrate, train, the classifier head, the failure predictor and routing — the only
run-time-adjacent code that may use torch."""
