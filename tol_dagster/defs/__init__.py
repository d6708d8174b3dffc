"""The Dagster layer: thin wiring of the core modules into assets, checks, sensors and jobs."""
