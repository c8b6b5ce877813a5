"""Backbones, cached features and transfer learning."""
