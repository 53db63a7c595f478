"""What an image is (pure: no I/O library): the Image spec, layer kinds, PEP 723, pins, checks."""
