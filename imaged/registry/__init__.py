"""The Distribution API over httpx: references, credentials, existence checks and pushes."""
