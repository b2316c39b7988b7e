"""Django's SQLite backend, with a health check that notices a replaced database file."""
