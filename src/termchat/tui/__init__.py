"""The interactive Textual front end."""
