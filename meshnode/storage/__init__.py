"""Everything in the data dir: the journal (SQLite), blobs, the node's key, the lock.

Each module owns its files and how they are written so that a crash or a full
disk loses nothing already recorded; none of them knows the node or the network.
"""
