"""What a build publishes: staging, layout, manifest, checksums, READMEs, and inspecting a bundle."""
