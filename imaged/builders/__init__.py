"""BuildKit/Docker builders behind one protocol; they know build requests, not Images."""
