"""Tillstream's shared package: event contracts and the infrastructure every service uses.

Services import from here and never from each other.
"""
