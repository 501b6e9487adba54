"""One module per command: argument parsing and output only; the work happens in `golf`."""
