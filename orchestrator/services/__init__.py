"""Use cases over ports: each takes its dependencies as arguments."""
