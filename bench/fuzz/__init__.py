"""Coverage-guided fuzz targets (atheris), run by hand, not by make test."""
