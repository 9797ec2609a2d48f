"""Durable and live stores: asyncpg repositories, SQL migrations, and the Redis key names."""
