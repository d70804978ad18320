"""gpushell: a login shell that gives each student their own LXC container."""

__version__ = "0.1.0"
