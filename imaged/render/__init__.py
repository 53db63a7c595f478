"""Digest -> build inputs, local only: the Dockerfile and the staged context."""
