"""The Textual TUI: `platform tui` and `platform search --tui`."""
