"""One module per artifact format, each with an `export` function and a runner; `registry` ties them together."""
