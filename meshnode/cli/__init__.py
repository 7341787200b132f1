"""``python -m meshnode``: the grammar (parser.py), and the commands grouped by what they act on."""
