"""Command-line tools: data (index, verify, split, synth), bench, study."""
