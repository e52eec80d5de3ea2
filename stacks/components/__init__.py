"""Pulumi ComponentResources that make up one gateway environment."""
