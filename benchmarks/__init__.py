"""imgpipe's benchmark suite: timed builds of the embedded dataset and of any dataset folders named in
IMGPIPE_BENCH_DATA, plus the standard Keras transfer-learning recipe as a baseline. Run
`python -m imgpipe.benchmarks` (or `imgpipe bench`)."""
