"""happysad benchmarks: latency and accuracy of exported models, through ``edge``."""
