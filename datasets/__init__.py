"""insitu package."""
