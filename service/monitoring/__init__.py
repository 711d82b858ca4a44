"""Watching the served model: its reference, drift on live traffic, captures, the status page."""
