"""The interactive Textual front end."""

# A stored conversation opens with its last this many exchanges (more than fill two screens,
# at four rows or more each); the rest is read once the first frame is out.
OPENED_EXCHANGES = 40
