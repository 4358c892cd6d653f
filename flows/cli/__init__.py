"""The command-line programs `colorfeat` and `colortrain`, above the library and the flows."""
