"""Widgets of the workbench TUI, reused across screens."""
