"""The frame's algorithm: (pack sessions, line profile) → Inspection, and its mapping to the wire item."""
