"""Where a decided frame goes: to review through the durable outbox, or decided here; the decision log."""
