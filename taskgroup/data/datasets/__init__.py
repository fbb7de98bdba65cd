"""Dataset generators and loaders that produce the examples and tasks tables."""
