"""The web door: JSON API (and, later, the admin pages). It never imports torch."""
