"""Policy files: schema, loader with file:line errors, directory watcher."""
