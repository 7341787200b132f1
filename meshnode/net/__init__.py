"""The network edge: a libp2p host with gossip, discovery and ping, behind a small interface.

Everything that knows libp2p lives here; the rest of meshnode sees ``MeshHost``.
"""
