"""The only place registry and builders meet: abuild/build and the build secrets."""
