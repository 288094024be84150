"""Ultralytics' module names (`ultralytics.models.sam`), as aliases of ours."""
