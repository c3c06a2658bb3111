"""The browser app (plain ES modules, no build step), shipped as package data of ``corral``."""
