"""Adapters that serve agent frameworks' runs as flows (each an optional extra)."""
