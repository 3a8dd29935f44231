"""The heroes resource: routes (controller), SQL (queries) and version rules (etags)."""
