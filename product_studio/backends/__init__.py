"""Swappable implementations behind small Protocols, registered by name (see registry.py)."""
