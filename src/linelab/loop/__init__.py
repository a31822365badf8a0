"""The closed loop: run the line, monitor, recall or diagnose, act, verify, write know-how."""
