"""The command-line commands: `distillery run`, `inspect`, `export`, `dedup`, ... (they open files and servers for the user)."""
