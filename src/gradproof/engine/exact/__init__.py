"""The exact evaluator: local central differences of a layered network."""
