"""The privacy team's web console: static files served at /console/ (docs/console.md)."""
