"""Reward machinery shared by plugins (checklists, judges)."""
