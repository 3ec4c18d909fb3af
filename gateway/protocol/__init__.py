"""Wire protocols (leaf modules used only by the HTTP edge)."""
