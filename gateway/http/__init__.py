"""The HTTP edge: Litestar app, controllers, and the problem+json mapping."""
