"""The only place registry and builders meet: abuild/build, the build secrets, registry logins."""
