"""Finding the instance behind a caller: one interface, several backends, a cache."""
