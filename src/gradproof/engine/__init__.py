"""The measurement engine: staged finite differences of a gradient, entry by entry."""
