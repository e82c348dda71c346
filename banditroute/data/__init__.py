"""Files shipped with the package (the example model pool)."""
