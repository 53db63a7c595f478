"""BuildKit/Docker builders behind one protocol, and their private scratch folders; they know build requests, not Images."""
