"""pylog serve."""
