"""The application shell: config, wiring, CLI and web; the only place importing all three."""
