"""The only place registry and builders meet: abuild/build, secrets, registry logins, scratch folders."""
