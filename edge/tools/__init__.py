"""Harnesses that drive lineside from outside — fault injection, the soak — never imported by run-time code."""
