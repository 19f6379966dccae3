"""The command line: the only place that imports typer or rich and maps errors to exit codes."""
