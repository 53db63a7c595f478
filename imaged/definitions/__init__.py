"""Loading users' definition modules: import, discovery, the loader child process."""
