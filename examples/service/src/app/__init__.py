"""The example service: an HTTP API (`app.main`) and a background worker (`app.worker`)."""

__version__ = "0.1.0"
