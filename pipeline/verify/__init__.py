"""Running artifacts on held-out images, their metrics, and the release gates."""
