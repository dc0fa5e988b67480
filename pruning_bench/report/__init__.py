"""Reports from MLflow runs, one way: load (``data``) -> aggregate (``cells``, ``stats``) -> findings and
summary -> render (Markdown/CSV, HTML, plots) -> written and logged (``publish``)."""
