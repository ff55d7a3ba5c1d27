"""Persistence: PostgreSQL models, repositories and services, Redis key schema.

Never imports aiogram: storage knows rows and keys, not Telegram objects.
"""
