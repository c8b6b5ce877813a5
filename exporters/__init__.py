"""One package per artifact format (export, runner, embedded metadata, README), tied together by `registry`."""
