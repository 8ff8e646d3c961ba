"""Attacks shared by both drivers (see attacks.py for why they live in the runtime)."""
