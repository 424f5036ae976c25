"""Run settings: one typed dataclass, YAML layers and command-line flags, checked before any work."""
