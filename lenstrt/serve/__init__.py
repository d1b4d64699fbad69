"""`lenstrt serve`: score a cutout catalog with a bundle's ensemble, resumably, exactly once."""
