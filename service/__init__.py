"""The Hero service: the SQL tutorial's heroes API on Litestar, msgspec and SQLAlchemy."""
