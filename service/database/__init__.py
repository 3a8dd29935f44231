"""Where SQL runs: the engines, the statements, SQLite and PostgreSQL, the tables, migrations."""
