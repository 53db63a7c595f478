"""The only place registry and builders meet: abuild/build, secrets, scratch folders."""
