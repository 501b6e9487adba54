"""golf's command-line interface: thin Typer commands over the `golf` library."""
